"""One 64-bit content hash per row of an Arrow table: what duplicate detection and late-row matching compare,
so a row hashes the same wherever it is compared."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

#: Nullable pandas dtypes, so a batch with a null int/bool column hashes like a batch without one
#: (plain ``to_pandas`` turns such a column into float64/object in that batch only).
_NULLABLE = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}


def row_hashes(table: pa.Table) -> np.ndarray:
    """One uint64 per row over all of ``table``'s columns (the index is not hashed)."""
    if table.num_rows == 0:
        return np.empty(0, np.uint64)
    frame = table.to_pandas(types_mapper=_NULLABLE.get)
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
