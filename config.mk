# config.mk: the only per-machine settings. Override on the command line,
# e.g. `make CC=clang OPT=-O1`.
PREFIX ?= /usr/local
CC ?= cc
OPT ?= -O2
ARCH ?= -march=native
CFLAGS ?= $(OPT) $(ARCH) -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter \
	-Wno-sign-compare -Wno-format-truncation -fno-strict-aliasing
LDLIBS ?= -lopenblas -ljpeg -lpng -lz -lmsgpackc -lm -lpthread
# Python with Debian's torch/torchvision/numpy/msgpack: the numerical oracle for tests.
PYTHON ?= /usr/bin/python3
