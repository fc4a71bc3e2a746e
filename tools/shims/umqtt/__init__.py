# umqtt is frozen into stock ESP32 firmware; on the host the package holds the
# umqtt.simple test double (simple.py), which shadows nothing on a real board.
