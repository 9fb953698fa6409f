# config.mk: the only per-machine settings. Override on the command line,
# e.g. `make CC=clang OPT=-O1`.
PREFIX ?= /usr/local
CC ?= cc
OPT ?= -O2
ARCH ?= -march=native
# -ffp-contract=off: no fused multiply-adds the source does not write, with
# any compiler (GCC's C11 mode has it; clang's default contracts), so the
# kernels give the bytes their tests and naive references state.
# -Wno-psabi: without AVX-512, GCC notes that lib/nn/simd.h's 64-byte vectors
# pass by value under another ABI; those functions are static inline and never
# cross a compilation unit
CFLAGS ?= $(OPT) $(ARCH) -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter \
	-Wno-sign-compare -Wno-format-truncation -Wno-psabi -fno-strict-aliasing -ffp-contract=off
LDLIBS ?= -lopenblas -ljpeg -lpng -lz -lmsgpackc -lm -lpthread
# Python with Debian's torch/torchvision/numpy/msgpack: the numerical oracle for tests.
PYTHON ?= /usr/bin/python3
