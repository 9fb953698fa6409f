# demo.mk: the front half of the VL2V pipeline on a sample of PACS, with
# embedded defaults, so that one command shows every stage that exists today.
#
#   make demo                          (from the repository root)
#   make -f pipelines/demo.mk [DATA=...] [OUT=out] [PER_DOMAIN=8] [MODEL=DIR]
#
# $(D)/manifest.tsv     imglist of DATA/PACS (seeded in/out split)
# $(D)/sample.tsv       PER_DOMAIN `out' images of each domain
# $(D)/images.mp        imgdecode --size 224
# $(D)/student.mp       student-embed: the real ImageNet MobileNetV2 in
#                       DATA/pretrained (input mean/std 0.5, from its metadata)
# $(D)/teacher.mp       teacher-embed with MODEL (a Hugging Face CLIP directory);
#                       without MODEL, a CLIP ViT-B/16 with random weights made
#                       by the test reference (plumbing only: its numbers mean
#                       nothing)
# $(D)/text.mp          text-embed: the PACS classes, 'a photo of a {}'
# The last step checks every stream and prints a few records of each.
include $(dir $(lastword $(MAKEFILE_LIST)))common.mk

PER_DOMAIN ?= 8
D := $(OUT)/demo
STUDENT ?= $(DATA)/pretrained/mobilenet_v2_imagenet.safetensors
BPE ?= $(DATA)/clip/bpe_simple_vocab_16e6.txt.gz
PYTHON ?= /usr/bin/python3
ifeq ($(MODEL),)
MODEL_DIR := $(D)/clip-random/hf
TEXT_BPE := --bpe $(BPE)
else
MODEL_DIR := $(MODEL)
TEXT_BPE :=
endif

.PHONY: all show
all: show

$(D)/manifest.tsv:
	@mkdir -p $(@D)
	imglist --seed $(SEED) $(DATA)/PACS -o $@ 2> $(@:.tsv=.log) $(SHOW_LOG)

$(D)/sample.tsv: $(D)/manifest.tsv
	awk -F'\t' -v n=$(PER_DOMAIN) 'NR == 1 || ($$6 == "out" && seen[$$5]++ < n)' $< > $@

$(D)/images.mp: $(D)/sample.tsv
	imgdecode -v --size 224 --max-errors $(MAX_ERRORS) -o $@ $< 2> $(@:.mp=.log) $(SHOW_LOG)

$(D)/student.mp: $(D)/images.mp
	student-embed -v --arch mobilenet_v2 --weights $(STUDENT) --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5 \
		-o $@ $< 2> $(@:.mp=.log) $(SHOW_LOG)

$(D)/clip-random/hf/config.json:
	$(PYTHON) $(VL2V)/tests/ref/clip_ref.py make --config vitb16 --weights-only --out $(D)/clip-random \
		2> $(D)/clip-random.log || { s=$$?; tail -n 20 $(D)/clip-random.log >&2; exit $$s; }

$(D)/teacher.mp: $(D)/images.mp $(MODEL_DIR)/config.json
	teacher-embed -v --model $(MODEL_DIR) -o $@ $< 2> $(@:.mp=.log) $(SHOW_LOG)

$(D)/text.mp: $(D)/manifest.tsv $(MODEL_DIR)/config.json
	text-embed -v --model $(MODEL_DIR) $(TEXT_BPE) --manifest $< -o $@ 2> $(@:.mp=.log) $(SHOW_LOG)

show: $(D)/student.mp $(D)/teacher.mp $(D)/text.mp
	@for s in $^; do echo "== $$s"; mpcat --check $$s; mpdump --head 2 $$s; done
