def _pair_impl(ctx):
    a = ctx.actions.declare_file(ctx.attr.name + "_a.txt")
    b = ctx.actions.declare_file(ctx.attr.name + "_b.txt")
    extra = ctx.actions.declare_file(ctx.attr.name + "_extra.txt")
    ctx.actions.run_shell(
        inputs = [ctx.file.src],
        outputs = [a, b],
        command = "cp \"$1\" \"$2\"; echo second > \"$3\"",
        arguments = [ctx.file.src.path, a.path, b.path],
        mnemonic = "Pair",
    )
    ctx.actions.run_shell(
        outputs = [extra],
        command = "echo 'only with --output_groups=+extra' > \"$1\"",
        arguments = [extra.path],
        mnemonic = "PairExtra",
    )
    return [
        DefaultInfo(files = depset([a, b])),
        OutputGroupInfo(extra = depset([extra])),
    ]

# A Starlark rule with two outputs, and a third in the output group "extra".
pair = rule(
    implementation = _pair_impl,
    attrs = {"src": attr.label(allow_single_file = True, mandatory = True)},
)
