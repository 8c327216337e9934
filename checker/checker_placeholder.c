typedef int tf__checker_placeholder;
