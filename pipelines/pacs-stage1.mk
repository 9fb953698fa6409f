# pacs-stage1.mk: the first complete classifier of VL2V-ADiP on the client
# half of PACS, leave-one-domain-out over its four domains: teacher
# zero-shot, ADiP stage 1 (the projection head on frozen student features)
# and the linear-probe ERM baseline, scored and tabled.
#
#   make -f pipelines/pacs-stage1.mk [DATA=...] [VENDOR=DIR] [OUT=out] [VIEWS=4] [SEED=0] [JOBS=2]
#
# The teacher is the offline vendor VENDOR (an OpenCLIP directory; default
# DATA/vendor/pacs-mnv2), queried black-box through --exec: every training
# image's VIEWS augmented views once (the cache in $(P)/cache is shared by the
# four splits and every later run), the evaluation images once for the
# zero-shot baseline, and the class prompts once. Only the vendor's `client'
# half of PACS (its split.tsv) is used: the teacher never saw these images.
# The student is the real ImageNet MobileNetV2 of DATA/pretrained.
#
# $(P)/client.tsv             the manifest's client rows (seeded in/out split)
# $(P)/views.mp               VIEWS augmented views of the `in' images
# $(P)/eval.mp                every client image, eval transform (224 squash)
# $(P)/{views,eval}.student.mp  the student's features
# $(P)/{views,eval}.teacher.mp  the vendor's image embeddings
# $(P)/text.mp                the vendor's text embeddings, 'a photo of a {}'
# $(P)/D/adip1.safetensors    stage 1 with domain D held out (and .log.mp)
# $(P)/D/probe.safetensors    the linear probe with D held out
# $(P)/*.pred.mp              predictions on the evaluation images
# $(P)/table.md               score's table (and table.tsv, table.json)
include $(dir $(lastword $(MAKEFILE_LIST)))common.mk

VENDOR ?= $(DATA)/vendor/pacs-mnv2
PACS ?= $(DATA)/PACS
STUDENT ?= $(DATA)/pretrained/mobilenet_v2_imagenet.safetensors
DOMAINS ?= art_painting cartoon photo sketch
VIEWS ?= 4
# stage 1's settings (method.md); STAGE1_OPTS adds any other align-fit option
STEPS ?= 5001
EVAL_EVERY ?= 200
STAGE1_OPTS ?=
# the vendor: any command that answers image and text streams
VENDOR_CMD ?= teacher-embed --model $(VENDOR)
MODEL_ID ?= pacs-mnv2
P := $(OUT)/pacs-stage1
QUERY = --exec '$(VENDOR_CMD)' --model-id $(MODEL_ID) --cache $(P)/cache

.PHONY: all
all: $(P)/table.md

$(P)/manifest.tsv:
	@mkdir -p $(@D)
	imglist -v --seed $(SEED) $(PACS) -o $@ 2> $(@:.tsv=.log) $(SHOW_LOG)

# the rows the vendor's split.tsv puts in the client half
$(P)/client.tsv: $(P)/manifest.tsv $(VENDOR)/split.tsv
	awk -F'\t' 'NR == FNR { half[$$1] = $$2; next } FNR == 1 || half[$$1] == "client"' \
		$(VENDOR)/split.tsv $< > $@.tmp && mv $@.tmp $@
$(P)/train.tsv: $(P)/client.tsv
	awk -F'\t' 'NR == 1 || $$6 == "in"' $< > $@.tmp && mv $@.tmp $@

$(P)/views.mp: $(P)/train.tsv
	$(SHARDED) imgdecode -v --augment --views $(VIEWS) --seed $(SEED) --size 224 --max-errors $(MAX_ERRORS) \
		< $< 2> $(@:.mp=.log) | mpcat -o $@ 2>> $(@:.mp=.log) $(SHOW_LOG)
$(P)/eval.mp: $(P)/client.tsv
	$(SHARDED) imgdecode -v --size 224 --max-errors $(MAX_ERRORS) < $< 2> $(@:.mp=.log) \
		| mpcat -o $@ 2>> $(@:.mp=.log) $(SHOW_LOG)

# the student's input normalisation is the one its weight file declares
$(P)/%.student.mp: $(P)/%.mp
	student-embed -v --weights $(STUDENT) -o $@ $< 2> $(@:.mp=.log) $(SHOW_LOG)

$(P)/%.teacher.mp: $(P)/%.mp
	teacher-embed -v $(QUERY) -o $@ $< 2> $(@:.mp=.log) $(SHOW_LOG)

$(P)/text.mp: $(P)/client.tsv
	text-embed -v $(QUERY) --manifest $< --template 'a photo of a {}' -o $@ 2> $(@:.mp=.log) $(SHOW_LOG)

STAGE1_IN = --features $(P)/views.student.mp --text $(P)/text.mp --val $(P)/eval.student.mp \
	--steps $(STEPS) --eval-every $(EVAL_EVERY) --seed $(SEED) $(STAGE1_OPTS)

$(P)/%/adip1.safetensors: $(P)/views.student.mp $(P)/views.teacher.mp $(P)/text.mp $(P)/eval.student.mp
	@mkdir -p $(@D)
	align-fit -v $(STAGE1_IN) --teacher $(P)/views.teacher.mp --test-domain $* --log $(@:.safetensors=.log.mp) \
		-o $@ 2> $(@:.safetensors=.log) $(SHOW_LOG)
$(P)/%/probe.safetensors: $(P)/views.student.mp $(P)/text.mp $(P)/eval.student.mp
	@mkdir -p $(@D)
	align-fit -v $(STAGE1_IN) --loss ce --test-domain $* --log $(@:.safetensors=.log.mp) \
		-o $@ 2> $(@:.safetensors=.log) $(SHOW_LOG)

$(P)/%.pred.mp: $(P)/%.safetensors $(P)/eval.student.mp
	predict --model $< -o $@ $(P)/eval.student.mp 2> $(@:.mp=.log) $(SHOW_LOG)
$(P)/zeroshot.pred.mp: $(P)/eval.teacher.mp $(P)/text.mp
	predict --text $(P)/text.mp -o $@ $< 2> $(@:.mp=.log) $(SHOW_LOG)

PREDS := $(P)/zeroshot.pred.mp $(foreach d,$(DOMAINS),$(P)/$(d)/adip1.pred.mp $(P)/$(d)/probe.pred.mp)
$(P)/table.md: $(PREDS)
	score $^ > $@.tmp && mv $@.tmp $@
	score --tsv $^ > $(P)/table.tsv
	score --json $^ > $(P)/table.json
	@cat $@
