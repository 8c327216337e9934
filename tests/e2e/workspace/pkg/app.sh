#!/bin/sh
cat "$0.runfiles/tf_e2e/pkg/data.txt" 2>/dev/null || echo app
