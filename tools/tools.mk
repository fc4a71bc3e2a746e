# Board tooling (issue 5): `include tools/tools.mk` from the Makefile.
#   make flash     BOARD=ESP32_GENERIC PORT=/dev/ttyUSB0 FIRMWARE=ESP32_GENERIC-v1.29.0.bin
#   make deploy    BOARD=ESP32_GENERIC PORT=/dev/ttyUSB0 [CA=path/ca.der]
#   make provision BOARD=ESP32_GENERIC PORT=/dev/ttyUSB0 CONFIG=secrets/product.json
#   make backup | restore FILE=backups/<pk>.<dn>.<mac>.cred | status   PORT=/dev/ttyUSB0
# ARGS= passes more options to the tool, e.g. ARGS=--dry-run or ARGS=--force.
PY ?= .venv/bin/python
BOARD ?= ESP32_GENERIC
PORT ?= /dev/ttyUSB0
FIRMWARE ?=
CONFIG ?=
CA ?=
FILE ?=
ARGS ?=

.PHONY: flash deploy provision backup restore status

flash:
	$(PY) -m tools.flash --board $(BOARD) --port $(PORT) --firmware "$(FIRMWARE)" $(ARGS)

deploy:
	$(PY) -m tools.deploy --board $(BOARD) --port $(PORT) $(if $(CA),--ca $(CA)) $(ARGS)

provision:
	$(PY) -m tools.provision --board $(BOARD) --port $(PORT) $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

backup:
	$(PY) -m tools.cred backup --board $(BOARD) --port $(PORT) $(ARGS)

restore:
	$(PY) -m tools.cred restore --board $(BOARD) --port $(PORT) "$(FILE)" $(ARGS)

status:
	$(PY) -m tools.cred status --board $(BOARD) --port $(PORT) $(ARGS)
