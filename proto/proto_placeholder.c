typedef int tf__proto_placeholder;
