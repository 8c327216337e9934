# One tree artifact of N files of 4 KiB (pseudo-random, distinct), made by one
# process: the benchmark's "many files" download.
def _impl(ctx):
    out = ctx.actions.declare_directory(ctx.attr.name + "_dir")
    ctx.actions.run_shell(
        outputs = [out],
        command = "python3 -c 'import os,sys\nfor i in range(int(sys.argv[2])):\n    d = os.path.join(sys.argv[1], \"d%03d\" % (i % 100))\n    os.makedirs(d, exist_ok=True)\n    open(os.path.join(d, \"f%05d.bin\" % i), \"wb\").write(os.urandom(4096))' \"$1\" \"$2\"",
        arguments = [out.path, str(ctx.attr.n)],
        mnemonic = "ManyFiles",
    )
    return [DefaultInfo(files = depset([out]))]

many_files = rule(implementation = _impl, attrs = {"n": attr.int(mandatory = True)})
