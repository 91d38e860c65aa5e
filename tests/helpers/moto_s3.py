"""A local S3 API server for tests: moto's ThreadedMotoServer on 127.0.0.1 (a free port).

moto keeps its buckets in the process's memory, not in the server: every server of one pytest
process would see the buckets an earlier test left.  Each server starts and ends empty (moto's own
``/moto-api/reset``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def moto_s3(key: str = "k", secret: str = "s", region: str = "us-east-1") -> Iterator[tuple[str, Any]]:
    """``(endpoint URL, boto3 S3 client with key/secret/region)``; the server stops on exit."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = "http://{}:{}".format(*server.get_host_and_port())
        _reset(endpoint)
        yield (
            endpoint,
            boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret, region_name=region),
        )
    finally:
        with contextlib.suppress(Exception):
            _reset(endpoint)
        server.stop()


def _reset(endpoint: str) -> None:
    import requests

    requests.post(f"{endpoint}/moto-api/reset", timeout=30).raise_for_status()
