#!/usr/bin/env python3
"""A bounded S3 / native load for scripts/bench: PUT or GET of SIZE-byte objects for
DURATION seconds from THREADS threads in each of PROCS processes, through the S3 gateway
with boto3 (mode s3) or on the store's own API with requests (mode native: the master's
redirect, then the body to or from the volume). Prints one JSON line: ops, bytes, seconds,
errors.

    s3load.py --mode s3 --op put --size 1024 --threads 8 --procs 2 --duration 5 \
        --endpoint http://127.0.0.1:9000 --master http://127.0.0.1:6000 --bucket bench
"""
import argparse
import json
import multiprocessing
import os
import random
import threading
import time

import boto3
import requests
from botocore.config import Config


def worker(args, results):
    body = os.urandom(args.size)
    keys = [f"{args.prefix}{i}" for i in range(args.keys)]
    deadline = time.time() + args.duration
    lock = threading.Lock()
    totals = {"ops": 0, "bytes": 0, "errors": 0}

    def run(index, local):
        if args.mode == "s3":
            s3 = boto3.client("s3", endpoint_url=args.endpoint, aws_access_key_id=args.access_key,
                              aws_secret_access_key=args.secret_key, region_name="us-east-1",
                              config=Config(retries={"max_attempts": 0}, max_pool_connections=4))
        else:
            session = requests.Session()
        ops = done = errors = 0
        rng = random.Random(index)
        filling = keys[local::args.threads]  # op fill: this thread's share of the GET keys, once each
        while time.time() < deadline and (args.count == 0 or ops < args.count) and (args.op != "fill" or ops < len(filling)):
            if args.op == "fill":
                key = filling[ops]
            else:
                key = keys[rng.randrange(len(keys))] if args.op == "get" else f"{args.prefix}{index}-{ops}"
            try:
                if args.mode == "s3":
                    if args.op in ("put", "fill"):
                        s3.put_object(Bucket=args.bucket, Key=key, Body=body)
                        done += len(body)
                    else:
                        for chunk in s3.get_object(Bucket=args.bucket, Key=key)["Body"].iter_chunks(1 << 20):
                            done += len(chunk)
                else:
                    url = f"{args.master}/store/{args.bucket}/{key}"
                    if args.op in ("put", "fill"):
                        redirect = session.put(url, data=b"", allow_redirects=False, timeout=60)
                        answer = session.put(redirect.headers["Location"], data=body, timeout=300)
                        if answer.status_code != 201:
                            raise RuntimeError(answer.status_code)
                        done += len(body)
                    else:
                        with session.get(url, stream=True, timeout=300) as answer:
                            if answer.status_code != 200:
                                raise RuntimeError(answer.status_code)
                            for chunk in answer.iter_content(1 << 20):
                                done += len(chunk)
                ops += 1
            except Exception:
                errors += 1
        with lock:
            totals["ops"] += ops
            totals["bytes"] += done
            totals["errors"] += errors

    threads = [threading.Thread(target=run, args=(os.getpid() * 1000 + i, i)) for i in range(args.threads)]
    start = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    totals["seconds"] = time.time() - start
    results.put(totals)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["s3", "native"], required=True)
    parser.add_argument("--op", choices=["put", "get", "fill"], required=True, help="fill: write the GET keys once")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--count", type=int, default=0, help="operations per thread at most (0: until the duration)")
    parser.add_argument("--keys", type=int, default=100, help="GET: keys PREFIX0..PREFIX(N-1), written beforehand")
    parser.add_argument("--prefix", default="obj-")
    parser.add_argument("--endpoint", default="http://127.0.0.1:9000")
    parser.add_argument("--master", default="http://127.0.0.1:6000")
    parser.add_argument("--bucket", default="bench")
    parser.add_argument("--access-key", default="bench")
    parser.add_argument("--secret-key", default="bench-secret")
    args = parser.parse_args()
    results = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=worker, args=(args, results)) for _ in range(args.procs)]
    for proc in procs:
        proc.start()
    totals = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    print(json.dumps({"ops": sum(t["ops"] for t in totals), "bytes": sum(t["bytes"] for t in totals),
                      "errors": sum(t["errors"] for t in totals), "seconds": max(t["seconds"] for t in totals)}))


if __name__ == "__main__":
    main()
