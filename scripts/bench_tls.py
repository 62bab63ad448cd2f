"""`scripts/bench --tls-only`: a volume over HTTPS against nginx over HTTPS with the same
certificate (ECDSA P-256, from a throwaway CA made by openssl), one worker, in one run.

- Handshakes per second: wrk -c50 GETs of a 1 KiB value with `Connection: close`, so every
  request is a new connection and a full handshake (wrk resumes no sessions).
- GET 1 KiB on kept-alive connections: wrk -c50.
- GET 64 MiB: wrk -c4, throughput in MiB/s. Kernel TLS (sendfile through the kernel's
  encryption) when the kernel has the `tls` module; otherwise both servers copy through
  OpenSSL (ours: pread + SSL_write; nginx: its own buffers + SSL_write). The table says which.

Each row: rate, nginx's rate, the ratio, and the CPU per operation (utime + stime, µs) of the
volume and of nginx's worker; ours and nginx alternated RUNS times, medians. Uses the bench's
own helpers (`bench`, the module of scripts/bench). Every load is bounded in time.
"""
import os
import re
import ssl
import statistics
import subprocess
import urllib.request

HUGE = 64 << 20


def make_certificates(directory):
    """A CA and one leaf for 127.0.0.1 it signs; returns (ca, certificate, key)."""
    os.makedirs(directory)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca, ca_key = f"{directory}/ca.pem", f"{directory}/ca.key"
    certificate, key = f"{directory}/leaf.pem", f"{directory}/leaf.key"
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)
    run("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=bench CA")
    run("req", *ec, "-keyout", key, "-out", f"{directory}/leaf.csr", "-subj", "/CN=localhost")
    with open(f"{directory}/leaf.ext", "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", f"{directory}/leaf.csr", "-CA", ca, "-CAkey", ca_key, "-set_serial", "1", "-days", "2",
        "-extfile", f"{directory}/leaf.ext", "-out", certificate)
    return ca, certificate, key


def wait_healthy(url, ca):
    context = ssl.create_default_context(cafile=ca)
    for _ in range(200):
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as answer:
                if answer.status == 200:
                    return
        except Exception:
            subprocess.run(["sleep", "0.05"])
    raise SystemExit(f"{url} never became healthy")


def nginx_config(root, port, certificate, key):
    temp = " ".join(f"{kind}_temp_path {root}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""
worker_processes 1;
user root;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  {temp}
  server {{
    listen 127.0.0.1:{port} ssl backlog=1024;
    ssl_certificate {certificate};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    ssl_conf_command Options KTLS;
    keepalive_requests 1000000;
    location /static/ {{ root {root}/www; }}
  }}
}}
"""


def kernel_tls():
    """Whether the kernel offers TLS (the `tls` ULP): a connected socket accepts it."""
    import socket
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            try:
                client.setsockopt(socket.IPPROTO_TCP, 31, b"tls")  # TCP_ULP
                return True
            except OSError:
                return False


def run(bench, work):
    ca, certificate, key = make_certificates(os.path.join(work, "pki"))
    tls = ["--tls-cert", certificate, "--tls-key", key, "--tls-ca", ca]

    volume_port, master_port = bench.free_port(), bench.free_port()
    volume = bench.start([f"{bench.BIN}/volume", "-p", str(volume_port), "-d", f"{work}/volume", "--bind", "127.0.0.1", *tls],
                         f"{work}/volume.log")
    wait_healthy(f"https://127.0.0.1:{volume_port}/health", ca)
    bench.start([f"{bench.BIN}/master", "-p", str(master_port), "-d", f"{work}/db", "--bind", "127.0.0.1", *tls,
                 "-v", f"https://127.0.0.1:{volume_port}"], f"{work}/master.log")
    master = f"https://127.0.0.1:{master_port}"
    wait_healthy(master + "/health", ca)

    root = os.path.join(work, "nginx")
    os.makedirs(f"{root}/www/static")
    located = {}
    for name, size in (("1k", 1024), ("64m", HUGE)):
        data = f"{root}/www/static/{name}"
        with open(data, "wb") as f:
            f.write(os.urandom(size))
        bench.sh("curl", "-sS", "-f", "-L", "--cacert", ca, "-T", data, f"{master}/store/tls-{name}")
        head = bench.sh("curl", "-sS", "-I", "--cacert", ca, f"{master}/store/tls-{name}")
        located[name] = re.search(r"(?im)^location: (\S+)", head).group(1)
    nginx_port = bench.free_port()
    with open(f"{root}/nginx.conf", "w") as f:
        f.write(nginx_config(root, nginx_port, certificate, key))
    nginx = bench.start(["nginx", "-c", f"{root}/nginx.conf", "-p", root], f"{root}/stdout.log")
    nginx_url = f"https://127.0.0.1:{nginx_port}"
    wait_healthy(nginx_url + "/static/1k", ca)
    nginx_worker = [bench.Pid(int(p)) for p in bench.sh("pgrep", "-P", str(nginx.pid)).split()]
    kernel = kernel_tls()
    print(f"volume https://127.0.0.1:{volume_port}, nginx {nginx_url}; kernel TLS: {'yes' if kernel else 'no'}; "
          f"{bench.RUNS} runs of {bench.DURATION}s each", flush=True)

    def measured(processes, url, connections, headers=()):
        before = sum(bench.cpu_seconds(p) for p in processes)
        rate, p50, p99, errors = bench.wrk(url, connections=connections, headers=headers)
        spent = sum(bench.cpu_seconds(p) for p in processes) - before
        return rate, p50, p99, errors, spent / max(1, rate * bench.DURATION) * 1e6

    rows = []

    def compare(label, path_ours, path_theirs, connections, headers=(), scale=1.0, unit="req/s"):
        mine, theirs = [], []
        for _ in range(bench.RUNS):
            mine.append(measured([volume], path_ours, connections, headers))
            theirs.append(measured(nginx_worker, path_theirs, connections, headers))
        median = lambda runs, index: statistics.median(r[index] for r in runs)
        rate, base = median(mine, 0) * scale, median(theirs, 0) * scale
        row = (label, rate, base, rate / base if base else 0, median(mine, 4), median(theirs, 4), unit,
               sum(r[3] for r in mine))
        rows.append(row)
        print(f"  {label}: {rate:.0f} vs {base:.0f} {unit}, {row[4]:.0f} vs {row[5]:.0f} µs CPU per op", flush=True)

    close = ("Connection: close",)
    compare("handshakes (GET 1 KiB, Connection: close)", located["1k"], nginx_url + "/static/1k", 50, close,
            unit="conn/s")
    compare("GET 1 KiB, kept-alive connections", located["1k"], nginx_url + "/static/1k", 50)
    compare(f"GET 64 MiB ({'kernel TLS' if kernel else 'no kernel TLS: copied through OpenSSL'})", located["64m"],
            nginx_url + "/static/64m", 4, scale=HUGE / (1 << 20), unit="MiB/s")

    print()
    print(f"{'operation (TLS, 127.0.0.1, one nginx worker)':58} {'ours':>9} {'nginx':>9} {'ratio':>6}"
          f" {'µs CPU/op':>10} {'nginx µs/op':>11}")
    for label, rate, base, ratio, cpu, base_cpu, unit, errors in rows:
        note = f"  ({errors} unexpected answers)" if errors else ""
        print(f"{label + ', ' + unit:58} {rate:9.0f} {base:9.0f} {ratio:6.2f} {cpu:10.1f} {base_cpu:11.1f}{note}")
