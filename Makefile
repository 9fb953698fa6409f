# vl2v: one non-recursive Makefile. Programs land in bin/, objects in build/.
# New files are picked up by name: lib/**/*.c join the library, tools/X.c
# becomes bin/X, tests/unit/X.c becomes the unit test build/tests/X.
include config.mk

# Where objects and programs go: check-asan builds into others.
BUILD ?= build
BINDIR ?= bin
CPPFLAGS += -Ilib -Itools
LIB_SRC := $(sort $(wildcard lib/*.c lib/*/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
TOOL_SRC := $(sort $(filter-out tools/common.c tools/query.c,$(wildcard tools/*.c)))
TOOLS := $(TOOL_SRC:tools/%.c=$(BINDIR)/%)
UNIT_SRC := $(sort $(wildcard tests/unit/*.c))
UNITS := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
MANS := $(wildcard man/*.[157])
# the pages also in man/manN/, where man -M man PAGE finds them before install
MAN_DIRS := $(foreach m,$(MANS),man/man$(subst .,,$(suffix $(m)))/$(notdir $(m)))
# Data files the tools read at run time, installed in $(PREFIX)/share/vl2v
# (tools/common.c: tool_share_file finds them there or in share/ here).
SHARE := share/bpe_simple_vocab_16e6.txt.gz

# Debian packages the build, the tests and the pipelines need.
DEPS := build-essential libopenblas-dev libjpeg62-turbo-dev libpng-dev libmsgpack-dev zlib1g-dev \
	parallel mandoc python3-torch python3-torchvision python3-numpy python3-msgpack python3-pil python3-regex \
	clang libclang-rt-14-dev dataset-fashion-mnist

.PHONY: all deps test units demo install uninstall clean fuzz bench check-asan
.DELETE_ON_ERROR:
.SECONDARY:

all: $(TOOLS) $(MAN_DIRS)

define man_copy
man/man$(1)/%.$(1): man/%.$(1)
	@mkdir -p $$(@D)
	cp $$< $$@
endef
$(foreach s,1 5 7,$(eval $(call man_copy,$(s))))

# Installs missing packages only; quick when all are present.
deps:
	@missing=$$(for p in $(DEPS); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing" $$missing; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

$(BUILD)/libvl2v.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

# tools/common.c and tools/query.c (the teacher queries of teacher-embed and
# text-embed) are linked into every program
TOOL_SHARED := $(BUILD)/tools/common.o $(BUILD)/tools/query.o
$(BINDIR)/%: $(BUILD)/tools/%.o $(TOOL_SHARED) $(BUILD)/libvl2v.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< $(TOOL_SHARED) $(BUILD)/libvl2v.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libvl2v.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libvl2v.a $(LDFLAGS) $(LDLIBS)

units: $(UNITS)

# The README's test command: installs what is missing, builds, runs every test.
test: deps
	$(MAKE) all units
	tests/run

# The README's main command: the pipeline's first stages on a sample of PACS
# (pipelines/demo.mk; DATA=, OUT=, MODEL= are passed on).
demo: deps
	$(MAKE) all
	$(MAKE) -f pipelines/demo.mk

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man7 $(DESTDIR)$(PREFIX)/share/vl2v
	install -m 755 $(TOOLS) $(DESTDIR)$(PREFIX)/bin
	install -m 644 $(SHARE) $(DESTDIR)$(PREFIX)/share/vl2v
	install -m 755 tools/pth2safetensors $(DESTDIR)$(PREFIX)/bin
	for m in $(MANS); do install -m 644 $$m $(DESTDIR)$(PREFIX)/share/man/man$${m##*.}; done

uninstall:
	rm -f $(TOOLS:$(BINDIR)/%=$(DESTDIR)$(PREFIX)/bin/%) $(DESTDIR)$(PREFIX)/bin/pth2safetensors
	rm -f $(SHARE:share/%=$(DESTDIR)$(PREFIX)/share/vl2v/%)
	for m in $(MANS); do rm -f $(DESTDIR)$(PREFIX)/share/man/man$${m##*.}/$${m##*/}; done

# Coverage-guided fuzzing of the stream reader and the safetensors parser
# (libFuzzer, clang). FUZZ_SECONDS per target. The library is compiled for
# the normal build's ARCH: lib/simd.h sizes its vectors for it, and on
# another target (clang's default, x86-64 without AVX-512) the fuzzers would
# test other code and clang warns that those vectors change the ABI (-Wpsabi).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz/*.c))
$(BUILD)/fuzz/%: tests/fuzz/%.c $(LIB_SRC)
	@mkdir -p $(@D)
	clang -g -O1 $(ARCH) -fsanitize=fuzzer,address,undefined $(CPPFLAGS) -D_GNU_SOURCE -std=c11 -o $@ $< $(LIB_SRC) $(LDLIBS)
fuzz: $(FUZZ_TARGETS)
	@for t in $(FUZZ_TARGETS); do \
		n=$${t##*/}; mkdir -p fuzz/out/$$n; \
		echo "fuzz: $$n for $(FUZZ_SECONDS)s"; \
		$$t -max_total_time=$(FUZZ_SECONDS) -max_len=65536 fuzz/out/$$n tests/fuzz/corpus/$$n 2>&1 | tail -n 3; \
	done

bench: all
	bench/run

# The tools and the unit tests built with AddressSanitizer and
# UndefinedBehaviorSanitizer, in build-asan/ and bin-asan/ (never mixed with
# the normal build), and the suite run with them (CHECK="PATTERN ...": the
# tests tests/run selects by name): a bad access, a leak or undefined
# behaviour fails the test that meets it (the program's exit status is 1).
# tests/run runs in build-asan/root, the source tree with bin and build
# pointing to the sanitized ones, and the C drivers the parity tests compile
# (cc on PATH) are sanitized too. The reports go to build-asan/log/, not to
# the standard error the golden tests compare; at the end any report of a
# bad access or of undefined behaviour fails the check, and leak reports
# are counted (a run that fails on purpose exits holding its memory).
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
check-asan:
	$(MAKE) BUILD=build-asan BINDIR=bin-asan CFLAGS='$(CFLAGS) $(ASAN_FLAGS)' LDFLAGS='$(LDFLAGS) $(ASAN_FLAGS)' all units
	@rm -rf build-asan/root build-asan/cc build-asan/log && mkdir -p build-asan/root build-asan/cc build-asan/log
	@for f in * .git; do case $$f in bin|build|bin-asan|build-asan) ;; *) ln -s ../../$$f build-asan/root/$$f ;; esac; done
	@ln -s ../../bin-asan build-asan/root/bin && ln -s .. build-asan/root/build
	@printf '#!/bin/sh\nexec $(CC) "$$@" $(ASAN_FLAGS)\n' > build-asan/cc/cc && chmod +x build-asan/cc/cc
	@log=$(CURDIR)/build-asan/log; \
	PATH=$(CURDIR)/build-asan/cc:$$PATH SHARED=$${SHARED:-$(abspath $(CURDIR)/..)/shared} \
		ASAN_OPTIONS=detect_leaks=1:log_path=$$log/asan UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$$log/ubsan \
		VL2V_SANITIZED=1 build-asan/root/tests/run $(CHECK); rc=$$?; \
	bad=$$(grep -lE 'ERROR: AddressSanitizer|runtime error' $$log/* 2>/dev/null); \
	leaks=$$(grep -l 'ERROR: LeakSanitizer' $$log/* 2>/dev/null | wc -l); \
	echo "check-asan: $$leaks leak reports in build-asan/log/"; \
	if [ -n "$$bad" ]; then echo "check-asan: bad accesses or undefined behaviour:" $$bad; rc=1; fi; \
	exit $$rc

clean:
	rm -rf build bin build-asan bin-asan fuzz/out man/man1 man/man5 man/man7

-include $(LIB_OBJ:.o=.d) $(TOOL_SRC:tools/%.c=$(BUILD)/tools/%.d) $(BUILD)/tools/common.d $(BUILD)/tools/query.d \
	$(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%.d)
