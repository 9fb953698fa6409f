# common.mk: what every pipeline makefile includes first.
#
# Stage outputs are the targets; each stage's stderr goes to NAME.log beside
# its output. Files at stage boundaries, pipes inside a stage. Parallel work
# at three levels: make -j across splits, GNU parallel across shards (or
# hosts, with PARALLEL_OPTS=--sshloginfile FILE), BLAS threads only for a
# stage that runs alone.

SHELL = /bin/bash
.SHELLFLAGS = -eu -o pipefail -c
.DELETE_ON_ERROR:
# stage outputs are expensive: never delete them as intermediates
.SECONDARY:
# bytewise collation everywhere (sort, join, comm, the manifests' order)
export LC_ALL = C

# the vl2v checkout this file belongs to, its programs first on PATH
VL2V := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))..)
export PATH := $(VL2V)/bin:$(PATH)

# where data sets are read and results written
DATA ?= $(VL2V)/../shared/data
OUT ?= out

# GNU parallel over manifest lines: jobs, block size (lines are never cut),
# extra options (e.g. --sshloginfile hosts). Every shard starts with the
# manifest's header line (--header 1), so that columns in any order are read
# the same in each; shards keep their order (-k) and mpcat joins the streams,
# checking that the headers agree.
JOBS ?= 2
BLOCK ?= 200k
PARALLEL_OPTS ?=
SHARDED = parallel --pipe -k --header 1 --block $(BLOCK) -j $(JOBS) $(PARALLEL_OPTS)

# one seed for every random choice of a run (splits, augmentation, training)
SEED ?= 0

# images that may fail to decode (reported in the log, dropped, counted in
# the stream's trailer) before the stage fails
MAX_ERRORS ?= 0

# ends a stage's recipe: when it fails, the end of its log (the stage's
# stderr, in TARGET-without-suffix.log) is shown, not only make's "Error 1"
SHOW_LOG = || { s=$$?; echo "$@ failed; the end of $(basename $@).log:" >&2; \
	tail -n 20 $(basename $@).log >&2; exit $$s; }
