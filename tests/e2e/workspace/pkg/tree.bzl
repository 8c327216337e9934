def _tree_impl(ctx):
    out = ctx.actions.declare_directory(ctx.attr.name + "_dir")
    ctx.actions.run_shell(
        inputs = [ctx.file.src],
        outputs = [out],
        command = """
set -e
mkdir -p "$1/sub"
cp "$2" "$1/copy.txt"
echo "alpha" > "$1/a.txt"
echo "beta" > "$1/sub/b.txt"
printf '#!/bin/sh\\necho from the tree\\n' > "$1/sub/run.sh"
chmod +x "$1/sub/run.sh"
printf '' > "$1/sub/empty.txt"
""",
        arguments = [out.path, ctx.file.src.path],
        mnemonic = "MakeTree",
    )
    return [DefaultInfo(files = depset([out]))]

tree = rule(
    implementation = _tree_impl,
    attrs = {"src": attr.label(allow_single_file = True, mandatory = True)},
)
