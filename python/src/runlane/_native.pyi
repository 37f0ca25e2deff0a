# The cffi module compiled from runlane.h (see build_native.py).
from typing import Any

ffi: Any
lib: Any
