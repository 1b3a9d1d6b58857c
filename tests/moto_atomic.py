"""moto_server with S3's atomic conditional writes: the S3 stand-in of the tests.

moto checks ``If-None-Match: *`` and ``If-Match`` and then stores the object in two steps, so two concurrent
conditional PUTs of one key can both succeed on it (a lost audit record in tests/audit/test_chain.py, 1 run in
about 10 under load). S3 and MinIO decide a conditional write atomically, which is what kfloop's exclusive
creates and leases rely on; here every object PUT is handled under one lock so the stand-in gives the same
guarantee. Everything else is moto_server as it is: ``python tests/moto_atomic.py -H 127.0.0.1 -p PORT``.
"""

import sys
import threading

from moto.s3.responses import S3Response
from moto.server import main

_LOCK = threading.Lock()
_put = S3Response.put_object


def _atomic_put(self: S3Response) -> object:
    with _LOCK:
        return _put(self)


S3Response.put_object = _atomic_put

if __name__ == "__main__":
    sys.exit(main())
