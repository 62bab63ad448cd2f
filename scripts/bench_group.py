"""`scripts/bench --group-only`: a master group (leader + one in-sync standby, on etcd) against
the single master, in one run (issue 23).

- PUT 1 KiB and PUT→GET→DELETE cycles, 16 clients (kalavara-load): rate, and CPU per
  operation of every daemon (masters, volume; etcd apart), the single master and the group
  alternated RUNS times.
- 302 redirects (wrk -c50 on one key): the leader alone, then the leader and the standby
  answering together (two wrk at once); the sum against the leader alone. Then the same with
  each master held to READ_CAP (0.4) of a core by a CPU cgroup, as on hosts of their own.
- Failover: FAILOVERS times (20), kill -9 the leader and time until a PUT through the other
  master gets its 201; the killed master is restarted, rejoins and is in sync before the next.

Uses the bench's own helpers (`bench`, the module of scripts/bench). Every loop is bounded.
"""
import json
import os
import statistics
import subprocess
import time
import urllib.request


def http(method, url, body=None, timeout=5):
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except Exception:
        return None, b""


class Etcd:
    def __init__(self, bench, work):
        self.client, peer = bench.free_port(), bench.free_port()
        self.url = f"http://127.0.0.1:{self.client}"
        self.process = bench.start(["etcd", "--name", "bench", "--data-dir", f"{work}/etcd",
                                    "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                                    "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                                    "--initial-cluster", f"bench=http://127.0.0.1:{peer}"], f"{work}/etcd.log")
        for _ in range(200):
            if http("POST", self.url + "/v3/kv/range", b'{"key":"AA=="}')[0] == 200:
                return
            time.sleep(0.05)
        raise SystemExit("etcd never answered")


class Group:
    """Two masters on etcd and one volume that knows both."""

    def __init__(self, bench, work, etcd, extra=()):
        self.bench, self.work = bench, os.path.join(work, "group")
        os.makedirs(self.work)
        self.ports = [bench.free_port(), bench.free_port()]
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]
        volume_port = bench.free_port()
        self.volume_url = f"http://127.0.0.1:{volume_port}"
        self.volume = bench.start([f"{bench.BIN}/volume", "-p", str(volume_port), "-d", f"{self.work}/v", "--bind", "127.0.0.1",
                                   "-m", ",".join(self.urls), "-b", self.volume_url], f"{self.work}/volume.log")
        bench.wait_healthy(self.volume_url + "/health")
        self.args = [[f"{bench.BIN}/master", "-p", str(p), "-d", f"{self.work}/db-{n}", "--bind", "127.0.0.1",
                      "-v", self.volume_url, "--etcd", etcd.url, *extra] for n, p in enumerate(self.ports)]
        self.masters = [None, None]
        self.start(0)
        self.wait(lambda: self.view(0).get("leader") == self.urls[0], "master 0 leading")
        self.start(1)
        self.wait_in_sync()

    def start(self, n):
        self.masters[n] = self.bench.start(self.args[n], f"{self.work}/master-{n}.log")
        self.bench.wait_healthy(self.urls[n] + "/health")

    def view(self, n):
        status, body = http("GET", self.urls[n] + "/admin/masters", timeout=2)
        return json.loads(body) if status == 200 else {}

    def leader(self):
        for n in (0, 1):
            if self.view(n).get("leader") == self.urls[n]:
                return n
        return None

    def wait(self, condition, what, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise SystemExit(f"timed out waiting for {what}")

    def wait_in_sync(self):
        def ready():
            leader = self.leader()
            if leader is None:
                return False
            members = self.view(leader).get("masters", [])
            volumes = [http("GET", url + "/admin/volumes", timeout=2)[1] for url in self.urls]
            return (len(members) == 2 and all(m["in_sync"] for m in members)
                    and all(b'"state":"up"' in v for v in volumes))
        self.wait(ready, "both masters in sync")

    def daemons(self):
        return [p for p in self.masters + [self.volume] if p and p.poll() is None]


CPU_CGROUPS = "/sys/fs/cgroup/cpu"


def redirect_rates(bench, urls):
    """302s a second from `urls` at once (one wrk each, the connections split between them)."""
    procs = [subprocess.Popen(["wrk", "-t1", f"-c{bench.CONNECTIONS // len(urls)}", f"-d{bench.DURATION}s", url + "/store/static-1k"],
                              stdout=subprocess.PIPE, text=True) for url in urls]
    return sum(float(bench.re.search(r"Requests/sec:\s+([\d.]+)", p.communicate()[0]).group(1)) for p in procs)


def capped_redirects(bench, group):
    """The same 302s with each master held to READ_CAP of a core (0.4) by a CPU cgroup, as
    on a small host of its own, and wrk given the rest: what a standby adds once it does not
    share the leader's cores. Skipped where the cgroup (v1) CPU controller is not writable."""
    cap = float(os.environ.get("READ_CAP", "0.4"))
    groups = [f"{CPU_CGROUPS}/kalavara-bench-master-{n}" for n in (0, 1)]
    try:
        for path in groups:
            os.makedirs(path, exist_ok=True)
            with open(f"{path}/cpu.cfs_period_us", "w") as f:
                f.write("100000")
            with open(f"{path}/cpu.cfs_quota_us", "w") as f:
                f.write(str(int(cap * 100000)))
    except OSError as error:
        print(f"302 redirects with each master held to {cap} of a core: skipped ({error})", flush=True)
        return
    try:
        for path, process in zip(groups, group.masters):
            with open(f"{path}/cgroup.procs", "w") as f:
                f.write(str(process.pid))
        alone, together = [], []
        for _ in range(bench.RUNS):
            alone.append(redirect_rates(bench, group.urls[:1]))
            together.append(redirect_rates(bench, group.urls))
        print(f"302 redirects, each master held to {cap} of a core: leader alone {statistics.median(alone):.0f}/s, "
              f"leader + standby {statistics.median(together):.0f}/s: {statistics.median(together) / statistics.median(alone):.2f}×",
              flush=True)
    finally:
        for process in group.masters:
            if process and process.poll() is None:
                with open(f"{CPU_CGROUPS}/cgroup.procs", "w") as f:
                    f.write(str(process.pid))
        for path in groups:
            try:
                os.rmdir(path)
            except OSError:
                pass


def run(bench, work):
    etcd = Etcd(bench, work)
    single = bench.Cluster(work, name="single")
    group = Group(bench, work, etcd)
    targets = {"single master": (single.url, lambda: [single.master, *single.volumes]),
               "group (1 standby)": (group.urls[0], group.daemons)}

    # PUT 1 KiB and PUT→GET→DELETE cycles: rate and CPU per operation, alternated.
    rows = {}
    for _ in range(bench.RUNS):
        for op in ("put", "cycle"):
            for label, (url, daemons) in targets.items():
                processes = daemons()
                cpu0 = sum(bench.cpu_seconds(p) for p in processes)
                out = bench.load("cycles", "-o", op, "-m", url, "-c", "16", "-t", str(bench.DURATION), "-p", f"b{time.time_ns()}-")
                cpu = sum(bench.cpu_seconds(p) for p in processes) - cpu0
                count = int(bench.re.search(r"(?:puts|cycles): (\d+) in", out).group(1))
                rate = float(bench.re.search(r"= (\d+) (?:PUT|cycles)/s", out).group(1))
                rows.setdefault((op, label), []).append((rate, cpu / count * 1e6))
    print()
    print(f"{'16 clients':40} {'rate /s':>9} {'µs CPU/op':>10}   runs (rate)")
    for (op, label), runs in rows.items():
        name = ("PUT 1 KiB, " if op == "put" else "PUT→GET→DELETE cycle, ") + label
        print(f"{name:40} {statistics.median(r[0] for r in runs):9.0f} {statistics.median(r[1] for r in runs):10.0f}   "
              + ", ".join(f"{r[0]:.0f}" for r in runs))
    for op in ("put", "cycle"):
        one, two = rows[(op, "single master")], rows[(op, "group (1 standby)")]
        print(f"  {op}: group / single: rate {statistics.median(r[0] for r in two) / statistics.median(r[0] for r in one):.2f}, "
              f"CPU per operation {statistics.median(r[1] for r in two) / statistics.median(r[1] for r in one):.2f}", flush=True)

    # 302 redirects: the leader alone, then leader and standby together.
    data = os.path.join(work, "1k")
    with open(data, "wb") as f:
        f.write(b"v" * 1024)
    subprocess.run(["curl", "-sS", "-f", "-L", "-T", data, group.urls[0] + "/store/static-1k"], check=True, capture_output=True)
    group.wait_in_sync()
    alone, together = [], []
    for _ in range(bench.RUNS):
        alone.append(bench.wrk(group.urls[0] + "/store/static-1k")[0])
        together.append(redirect_rates(bench, group.urls))
    print()
    print(f"302 redirects: leader alone {statistics.median(alone):.0f}/s, leader + standby {statistics.median(together):.0f}/s: "
          f"{statistics.median(together) / statistics.median(alone):.2f}× (both masters, wrk and the machine's 2 cores shared)",
          flush=True)
    capped_redirects(bench, group)

    # Failover: time from kill -9 of the leader to the first 201 through the other master.
    kills = int(os.environ.get("FAILOVERS", "20"))
    times = []
    for index in range(kills):
        group.wait_in_sync()
        leader = group.leader()
        survivor = 1 - leader
        victim = group.masters[leader]
        victim.kill()
        killed = time.time()
        victim.wait()
        deadline = killed + 60
        while time.time() < deadline:
            if put_through(group.urls[survivor] + f"/store/failover-{index}") == 201:
                break
            time.sleep(0.05)
        times.append(time.time() - killed)
        print(f"  failover {index + 1}: {times[-1]:.2f} s", flush=True)
        group.start(leader)
    times.sort()
    if times:
        print(f"failover over {kills} kills (--lease-ttl 5): median {statistics.median(times):.2f} s, "
              f"worst {times[-1]:.2f} s, best {times[0]:.2f} s")
    single.stop()


def put_through(url, body=b"x"):
    """A PUT through a master, its 307s followed (a standby's to the leader, the leader's to a
    volume); the final status, None when nothing answered."""
    for _ in range(3):
        status, location = http_raw("PUT", url, body)
        if status != 307 or not location:
            return status
        url = location
    return None


def http_raw(method, url, body):
    import http.client
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        connection.request(method, parts.path + ("?" + parts.query if parts.query else ""), body=body)
        answer = connection.getresponse()
        answer.read()
        return answer.status, answer.getheader("Location")
    except Exception:
        return None, None
    finally:
        connection.close()
