typedef int tf__events_placeholder;
