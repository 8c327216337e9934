#!/bin/sh
echo "check_test: running"
grep -q data "$TEST_SRCDIR/tf_e2e/pkg/data.txt"
