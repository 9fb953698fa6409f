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
# extra options (e.g. --sshloginfile hosts). Manifest shards keep their order
# (-k) and mpcat joins the streams, checking that the headers agree.
JOBS ?= 2
BLOCK ?= 200k
PARALLEL_OPTS ?=
SHARDED = parallel --pipe -k --block $(BLOCK) -j $(JOBS) $(PARALLEL_OPTS)

# one seed for every random choice of a run (splits, augmentation, training)
SEED ?= 0
