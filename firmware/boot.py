# Runs first on every reset. Kept empty of work: main.py does the rest.
import gc

gc.collect()
