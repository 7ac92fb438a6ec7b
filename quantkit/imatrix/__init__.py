"""Importance matrices: llama-imatrix's statistics collected through libllama's eval callback (collect), their
files (format), the calibration text kept apart from the scored text (calibration), and the command's library
function with the cached matrix `--imatrix auto` uses (compute)."""
from __future__ import annotations

from .compute import ImatrixResult, compute_imatrix, imatrix_for_base
from .format import (Imatrix, ImatrixEntry, check_imatrix_matches, load_imatrix, read_imatrix, write_imatrix,
                     write_legacy_imatrix)

__all__ = ["Imatrix", "ImatrixEntry", "ImatrixResult", "check_imatrix_matches", "compute_imatrix",
           "imatrix_for_base", "load_imatrix", "read_imatrix", "write_imatrix", "write_legacy_imatrix"]
