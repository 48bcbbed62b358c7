"""An unmodified in-cluster client: the official Python `kubernetes` library.

It runs inside the pod sandbox, where load_incluster_config() reads the (fake) ServiceAccount
at the standard path and KUBERNETES_SERVICE_HOST/PORT, exactly as in a real pod.
"""

import sys
import time

from kubernetes import client, config, watch
from kubernetes.stream import portforward, stream


def main(argv):
    config.load_incluster_config()
    api_client = client.ApiClient()
    if "--impersonate" in argv:
        argv = [a for a in argv if a != "--impersonate"]
        api_client.set_default_header("Impersonate-User", "system:admin")
        api_client.set_default_header("Impersonate-Group", "system:masters")
    core = client.CoreV1Api(api_client)
    command, args = argv[0], argv[1:]

    if command == "list":
        for pod in core.list_namespaced_pod(args[0]).items:
            print(pod.metadata.name)
    elif command == "get":
        pod = core.read_namespaced_pod(args[1], args[0])
        print(pod.metadata.name, pod.status.phase)
    elif command == "create":
        body = client.V1Pod(
            metadata=client.V1ObjectMeta(name=args[1]),
            spec=client.V1PodSpec(containers=[client.V1Container(name="app", image="busybox")]),
        )
        created = core.create_namespaced_pod(args[0], body)
        print(created.metadata.name, created.metadata.resource_version)
    elif command == "watch":
        # Watch the namespace until the named pod shows up.
        for event in watch.Watch().stream(core.list_namespaced_pod, args[0], timeout_seconds=30):
            if event["object"].metadata.name == args[1]:
                print(event["type"], args[1], flush=True)
                break
    elif command == "delete":
        core.delete_namespaced_pod(args[1], args[0])
        print("deleted", args[1])
    elif command == "exec":
        out = stream(
            core.connect_get_namespaced_pod_exec,
            args[1],
            args[0],
            command=args[2:],
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
        )
        print(out, end="")
    elif command == "portforward":
        forward = portforward(
            core.connect_get_namespaced_pod_portforward, args[1], args[0], ports=args[2]
        )
        sock = forward.socket(int(args[2]))
        sock.setblocking(True)
        sock.sendall(args[3].encode())
        received = b""
        deadline = time.time() + 20
        while len(received) < len(args[3]) and time.time() < deadline:
            received += sock.recv(1024)
        print(received.decode())
        sock.close()
        forward.close() if hasattr(forward, "close") else None
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
