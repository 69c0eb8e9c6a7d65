#!/usr/bin/env python3
"""Asks cofferd's grpc.health.v1 service, as any gRPC client would, for the status of
one or more services and prints one line per service: `<service> <STATUS>`.

Usage: health_check.py SOCKET_PATH SERVICE [SERVICE...]   ("" is the daemon itself)

STATUS is the ServingStatus name (SERVING, NOT_SERVING, SERVICE_UNKNOWN, ...), or
`ERROR <grpc code> <details>` when the call fails. Exits 0 if every call answered.
"""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    socket, services = sys.argv[1], sys.argv[2:]
    failed = False
    # gRPC C-core sends the percent-encoded socket path as `:authority` for `unix:`
    # targets, which the Rust h2 server (under tonic) rejects as malformed with
    # RST_STREAM(PROTOCOL_ERROR). "localhost" is the convention for Unix sockets
    # (grpc-go, kubelet, `grpcurl -authority localhost`).
    options = [("grpc.default_authority", "localhost")]
    with grpc.insecure_channel(f"unix:{socket}", options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in services:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=20)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                print(f"{service!r} {status}")
            except grpc.RpcError as e:
                failed = True
                print(f"{service!r} ERROR {e.code().name} {e.details()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
