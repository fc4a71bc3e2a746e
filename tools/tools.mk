# The board targets, included by the Makefile (docs/real-boards.md, docs/production-line.md).
#   make flash     BOARD=ESP32_GENERIC PORT=/dev/ttyUSB0 FIRMWARE=ESP32_GENERIC-v1.29.0.bin
#   make deploy    BOARD=ESP32_GENERIC PORT=/dev/ttyUSB0 [CA=path/ca.der]
#   make provision BOARD=ESP32_GENERIC PORT=/dev/ttyUSB0 CONFIG=secrets/product.json
#   make backup | restore FILE=backups/<pk>.<dn>.<mac>.cred | status   PORT=/dev/ttyUSB0
#   make line      BOARD=ESP32_GENERIC PORTS='/dev/ttyUSB*' CONFIG=secrets/product.json [NAMES=names.csv]
#                  [MANIFEST=line1.csv] [FIRMWARE=...bin] [CA=...]   (many boards at once; resumes)
#   make line-bench                    boards/hour, 8 virtual boards in parallel vs one after another
# ARGS= passes more options to the tool, e.g. ARGS=--dry-run or ARGS=--force; never a secret (make
# echoes the command): secrets go in files (--product-secret-file, --wifi-password-file).
PY ?= .venv/bin/python
BOARD ?= ESP32_GENERIC
PORT ?= /dev/ttyUSB0
PORTS ?=
FIRMWARE ?=
CONFIG ?=
CA ?=
FILE ?=
NAMES ?=
MANIFEST ?= line-manifest.csv
ARGS ?=

# $(call need,VAR,example): one line and a stop when a variable the target needs is empty
# (`make provision PORT=` would otherwise hand the tool an option without its value).
need = $(if $(strip $($(1))),,$(error $(1) is empty: give $(1)=$(2)))
# A secret typed into ARGS would be echoed by make with the command it runs (and end up in a CI log):
# stop while the recipe is expanded, before anything is echoed. The value is never shown.
_SECRET_OPTS = --product-secret --product-secret=% --wifi-password --wifi-password=%
nosecret = $(if $(filter $(_SECRET_OPTS),$(ARGS)),$(error ARGS holds a secret option; make echoes the \
  commands it runs: put the secret in a file and give --product-secret-file FILE or --wifi-password-file FILE))

.PHONY: flash deploy provision backup restore status line line-bench

flash:
	$(nosecret)$(call need,BOARD,ESP32_GENERIC)$(call need,PORT,/dev/ttyUSB0)$(call need,FIRMWARE,ESP32_GENERIC-v1.29.0.bin)
	$(PY) -m tools.flash --board "$(BOARD)" --port "$(PORT)" --firmware "$(FIRMWARE)" $(ARGS)

deploy:
	$(nosecret)$(call need,BOARD,ESP32_GENERIC)$(call need,PORT,/dev/ttyUSB0)
	$(PY) -m tools.deploy --board $(BOARD) --port $(PORT) $(if $(CA),--ca $(CA)) $(ARGS)

provision:
	$(nosecret)$(call need,BOARD,ESP32_GENERIC)$(call need,PORT,/dev/ttyUSB0)
	$(PY) -m tools.provision --board $(BOARD) --port $(PORT) $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

backup:
	$(nosecret)$(call need,BOARD,ESP32_GENERIC)$(call need,PORT,/dev/ttyUSB0)
	$(PY) -m tools.cred backup --board $(BOARD) --port $(PORT) $(ARGS)

restore:
	$(nosecret)$(call need,BOARD,ESP32_GENERIC)$(call need,PORT,/dev/ttyUSB0)$(call need,FILE,backups/<pk>.<dn>.<mac>.cred)
	$(PY) -m tools.cred restore --board $(BOARD) --port $(PORT) "$(FILE)" $(ARGS)

status:
	$(nosecret)$(call need,BOARD,ESP32_GENERIC)$(call need,PORT,/dev/ttyUSB0)
	$(PY) -m tools.cred status --board $(BOARD) --port $(PORT) $(ARGS)

line:
	$(nosecret)$(call need,BOARD,ESP32_GENERIC)$(call need,PORTS,'/dev/ttyUSB*')$(call need,CONFIG,secrets/product.json)$(call need,MANIFEST,line1.csv)
	$(PY) -m tools.line --board $(BOARD) --ports $(PORTS) --config $(CONFIG) --manifest $(MANIFEST) $(if $(NAMES),--names $(NAMES)) $(if $(FIRMWARE),--firmware "$(FIRMWARE)") $(if $(CA),--ca $(CA)) $(ARGS)

line-bench:
	$(nosecret)$(PY) -m tools.line --bench 8 $(ARGS)
