# pacs-images.mk: the manifest and the decoded image streams of PACS.
#
#   make -f pipelines/pacs-images.mk [DATA=...] [OUT=out] [SIZE=224] [VIEWS=2] [MAX_ERRORS=0]
#
# $(OUT)/pacs/manifest.tsv          imglist of DATA/PACS (seeded in/out split)
# $(OUT)/pacs/eval/DOMAIN.mp        evaluation images of a domain, SIZE x SIZE
# $(OUT)/pacs/train/DOMAIN.mp       VIEWS augmented views of its `in' images
# Decoding is sharded over JOBS cores with GNU parallel and joined by mpcat;
# the streams are byte-identical to an unsharded run.
include $(dir $(lastword $(MAKEFILE_LIST)))common.mk

PACS ?= $(DATA)/PACS
DOMAINS ?= art_painting cartoon photo sketch
SIZE ?= 224
VIEWS ?= 2
P := $(OUT)/pacs

.PHONY: all manifest eval train
all: eval train
manifest: $(P)/manifest.tsv
eval: $(DOMAINS:%=$(P)/eval/%.mp)
train: $(DOMAINS:%=$(P)/train/%.mp)

$(P)/manifest.tsv:
	@mkdir -p $(@D)
	imglist -v --seed $(SEED) $(PACS) -o $@ 2> $(@:.tsv=.log) $(SHOW_LOG)

# the rows of one domain (and split), header kept
$(P)/rows/%.eval.tsv: $(P)/manifest.tsv
	@mkdir -p $(@D)
	awk -F'\t' -v d=$* 'NR == 1 || $$5 == d' $< > $@
$(P)/rows/%.train.tsv: $(P)/manifest.tsv
	@mkdir -p $(@D)
	awk -F'\t' -v d=$* 'NR == 1 || ($$5 == d && $$6 == "in")' $< > $@

$(P)/eval/%.mp: $(P)/rows/%.eval.tsv
	@mkdir -p $(@D)
	$(SHARDED) imgdecode -v --size $(SIZE) --max-errors $(MAX_ERRORS) < $< 2> $(@:.mp=.log) \
		| mpcat -o $@ 2>> $(@:.mp=.log) $(SHOW_LOG)

$(P)/train/%.mp: $(P)/rows/%.train.tsv
	@mkdir -p $(@D)
	$(SHARDED) imgdecode -v --augment --views $(VIEWS) --seed $(SEED) --size $(SIZE) \
		--max-errors $(MAX_ERRORS) < $< 2> $(@:.mp=.log) | mpcat -o $@ 2>> $(@:.mp=.log) $(SHOW_LOG)
