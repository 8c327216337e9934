# Flattens `protoc --decode=google.protobuf.FileDescriptorSet` text output
# into one line per message field and per enum value, so two schemas can be
# compared with sort/join:
#
#   T <message or enum>
#   F <message> <number> <name> <label> <type> <type_name or -> <oneof or ->
#   E <enum> <number> <name>
#
# Names are fully qualified without the leading dot (e.g.
# build_event_stream.BuildEventId.TargetCompletedId). Extensions, options
# and services are ignored. The input holds only "key {", "key: value" and
# "}" lines; keys of option extensions look like "[failure_details.metadata]".

function reset_field() {
	fname = fnum = flabel = ftype = ""
	ftypename = "-"
	foneof = ""
}

/ \{$/ {
	depth++
	stack[depth] = $1
	scope[depth] = scope[depth - 1]
	if ($1 == "field")
		reset_field()
	if ($1 == "value")
		vname = vnum = ""
	next
}

/^ *\}$/ {
	key = stack[depth]
	parent = stack[depth - 1]
	if (key == "field" && (parent == "message_type" || parent == "nested_type")) {
		nfields++
		fields[nfields] = "F " scope[depth - 1] " " fnum " " fname " " flabel " " ftype " " ftypename
		fscope[nfields] = scope[depth - 1]
		findex[nfields] = foneof
	}
	if (key == "value" && parent == "enum_type")
		print "E " scope[depth - 1] " " vnum " " vname
	if (key == "oneof_decl")
		oneofs[scope[depth - 1], noneofs[scope[depth - 1]]++] = oname
	depth--
	next
}

/^ *[a-z_]+: / {
	key = $1
	sub(/:$/, "", key)
	val = $0
	sub(/^ *[a-z_]+: /, "", val)
	gsub(/"/, "", val)
	me = stack[depth]
	if (key == "package" && me == "file") {
		pkg = val
	} else if (key == "name" && (me == "message_type" || me == "nested_type" || me == "enum_type")) {
		scope[depth] = (stack[depth - 1] == "file") ? pkg "." val : scope[depth - 1] "." val
		print "T " scope[depth]
	} else if (me == "field") {
		if (key == "name") fname = val
		else if (key == "number") fnum = val
		else if (key == "label") flabel = val
		else if (key == "type") ftype = val
		else if (key == "type_name") { ftypename = val; sub(/^\./, "", ftypename) }
		else if (key == "oneof_index") foneof = val
	} else if (me == "value" && stack[depth - 1] == "enum_type") {
		if (key == "name") vname = val
		else if (key == "number") vnum = val
	} else if (me == "oneof_decl" && key == "name") {
		oname = val
	}
	next
}

END {
	for (i = 1; i <= nfields; i++)
		print fields[i] " " (findex[i] == "" ? "-" : oneofs[fscope[i], findex[i]])
}
