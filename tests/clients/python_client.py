"""An unmodified in-cluster client: the official Python `kubernetes` library.

It runs inside the pod sandbox, where load_incluster_config() reads the (fake) ServiceAccount
at the standard path and KUBERNETES_SERVICE_HOST/PORT, exactly as in a real pod.
"""

import json
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.stream import portforward, stream
from kubernetes.watch.watch import iter_resp_lines


def watch_many(core, namespace, name, count):
    """Opens `count` watches at once, each on its own HTTP/1.1 connection; prints `watching N`
    once every one has its response headers, then `ADDED name i` as each sees the pod."""
    responses = [None] * count

    def open_watch(i):
        # Returns as soon as the response headers are in.
        responses[i] = core.list_namespaced_pod(
            namespace, watch=True, timeout_seconds=60, _preload_content=False
        )

    threads = [threading.Thread(target=open_watch, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    if any(response is None for response in responses):
        raise SystemExit(f"only {sum(r is not None for r in responses)} of {count} watches started")
    print("watching", count, flush=True)
    printing = threading.Lock()

    def read(i):
        for line in iter_resp_lines(responses[i]):
            event = json.loads(line)
            if event["type"] == "ADDED" and event["object"]["metadata"]["name"] == name:
                with printing:
                    print("ADDED", name, i, flush=True)
                return

    readers = [threading.Thread(target=read, args=(i,)) for i in range(count)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=60)


def main(argv):
    if argv[0] == "--context":
        # The fake kubeconfig MCA writes (KUBECONFIG), with one context per cluster.
        config.load_kube_config(context=argv[1])
        argv = argv[2:]
    else:
        config.load_incluster_config()
    # Room for many concurrent requests (urllib3 keeps 4 connections per host by default).
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = 128
    client.Configuration.set_default(configuration)
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
    elif command == "list-any-version":
        # As an informer starts: any resourceVersion will do (the API server's watch cache).
        for _ in range(int(args[2])):
            listed = core.list_namespaced_pod(args[0], label_selector=args[1], resource_version="0")
        print(",".join(pod.metadata.name for pod in listed.items))
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
    elif command == "watch-many":
        watch_many(core, args[0], args[1], int(args[2]))
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
