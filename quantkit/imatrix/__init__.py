"""Importance matrices: llama-imatrix's statistics collected through libllama's eval callback, their files, and
the calibration text they are computed on."""
from __future__ import annotations

from .format import (Imatrix, ImatrixEntry, check_imatrix_matches, load_imatrix, read_imatrix, write_imatrix,
                     write_legacy_imatrix)

__all__ = ["Imatrix", "ImatrixEntry", "check_imatrix_matches", "load_imatrix", "read_imatrix", "write_imatrix",
           "write_legacy_imatrix"]
