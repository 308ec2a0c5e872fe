"""emopipe: a reproducible facial-emotion pipeline. Importing it pins the CPU numerics (see numerics.py)."""
from emopipe import numerics

numerics.pin_environment()
