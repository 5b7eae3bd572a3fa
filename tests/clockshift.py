"""Run the owsync CLI with its clock shifted: clockshift.py SECONDS ARGS...

The only way tests inject a clock into a real owsync process; the product
itself has no option for it.
"""

import sys
import time

import owsync.cli

offset = float(sys.argv[1])
owsync.cli.CLOCK = lambda: time.time() + offset
sys.exit(owsync.cli.main(sys.argv[2:]))
