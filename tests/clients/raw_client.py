"""A client that dials an address directly, like code with a hard-coded API server address.

Usage: raw_client.py HOST PORT SERVER_NAME CAFILE
Connects to HOST:PORT (IPv4, IPv6 or v4-mapped), prints what getpeername() reports, verifies
TLS against CAFILE as SERVER_NAME, sends GET /version with the ServiceAccount token (if one is
mounted) and prints the response status line.
"""

import os
import socket
import ssl
import sys

TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def main(host, port, server_name, cafile):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    peer = sock.getpeername()
    print("peer", peer[0], peer[1], flush=True)
    context = ssl.create_default_context(cafile=cafile)
    tls = context.wrap_socket(sock, server_hostname=server_name)
    token = open(TOKEN).read() if os.path.exists(TOKEN) else ""
    tls.sendall(
        (
            "GET /version HTTP/1.1\r\nHost: kubernetes.default.svc\r\n"
            f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ).encode()
    )
    response = b""
    while chunk := tls.recv(65536):
        response += chunk
    print(response.split(b"\r\n", 1)[0].decode())


if __name__ == "__main__":
    main(*sys.argv[1:])
