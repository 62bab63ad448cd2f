"""Real S3 clients (boto3, the aws CLI, rclone) against a running kalavara-s3.

Run by Tests/IntegrationTests/S3GatewayTests.swift, which starts a signed cluster, two
gateways and this script. Every check prints "ok NAME"; the first failure raises, and the
script exits non-zero with the traceback.

Environment: WO_ACCESS_KEY, WO_SECRET_KEY (a write-only user), S3_ENDPOINT, S3_SWEEP_ENDPOINT (a gateway with a short --upload-grace),
MASTER_URL, MASTER_AUTH (NAME:SECRET, optional), ACCESS_KEY, SECRET_KEY, RO_ACCESS_KEY, RO_SECRET_KEY, WORKDIR.
"""
import base64
import datetime
import hashlib
import hmac
import io
import os
import random
import subprocess
import sys
import time
import urllib.parse
from unittest import mock

import boto3
import botocore
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

ENDPOINT = os.environ["S3_ENDPOINT"]
SWEEP_ENDPOINT = os.environ.get("S3_SWEEP_ENDPOINT", "")
MASTER = os.environ["MASTER_URL"]
KEY, SECRET = os.environ["ACCESS_KEY"], os.environ["SECRET_KEY"]
RO_KEY, RO_SECRET = os.environ["RO_ACCESS_KEY"], os.environ["RO_SECRET_KEY"]
WO_KEY, WO_SECRET = os.environ["WO_ACCESS_KEY"], os.environ["WO_SECRET_KEY"]
WORK = os.environ["WORKDIR"]
CONFIG = Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"})


def client(key=KEY, secret=SECRET, endpoint=ENDPOINT):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                        region_name="us-east-1", config=CONFIG)


s3 = client()


def signing_clock(offset):
    """botocore signs as if its clock were `offset` (a timedelta) away from now."""
    from botocore.compat import get_current_datetime
    return mock.patch("botocore.auth.get_current_datetime", return_value=get_current_datetime() + offset)


def ok(name):
    print("ok " + name, flush=True)


def expect(condition, message=""):
    """A check that holds under `python3 -O` too (PYTHONOPTIMIZE strips `assert`): when
    `condition` is false it raises AssertionError with `message`, as a failed assert would."""
    if not condition:
        raise AssertionError(message)


def error_code(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError("expected an S3 error from %s" % call)


MASTER_AUTH = tuple(os.environ["MASTER_AUTH"].split(":", 1)) if os.environ.get("MASTER_AUTH") else None


def native(key):
    """What the store's own API gives for a key: the master's redirect, followed."""
    return requests.get(MASTER + "/store/" + urllib.parse.quote(key), timeout=30, auth=MASTER_AUTH)


def index_keys(prefix):
    """The master's listing of a prefix (the gateway's bookkeeping is ordinary keys)."""
    answer = requests.get(MASTER + "/store/", params={"prefix": prefix}, timeout=10, auth=MASTER_AUTH)
    expect(answer.status_code == 200, answer.text)
    return answer.json()["keys"]


def md5(data):
    return hashlib.md5(data).hexdigest()


def buckets():
    s3.create_bucket(Bucket="alpha")
    s3.head_bucket(Bucket="alpha")
    expect("alpha" in [b["Name"] for b in s3.list_buckets()["Buckets"]])
    s3.create_bucket(Bucket="alpha")  # again: S3's us-east-1 answers 200 to the owner
    expect(error_code(s3.create_bucket, Bucket="alpha", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}) ==
           ("BucketAlreadyOwnedByYou", 409))
    expect(error_code(s3.create_bucket, Bucket="No_Such")[0] == "InvalidBucketName")
    expect(error_code(s3.head_bucket, Bucket="missing-bucket")[1] == 404)
    expect(error_code(s3.put_object, Bucket="missing-bucket", Key="k", Body=b"x")[0] == "NoSuchBucket")
    s3.create_bucket(Bucket="beta", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    first = s3.list_buckets(MaxBuckets=1)
    expect([b["Name"] for b in first["Buckets"]] == ["alpha"] and first["ContinuationToken"], first)
    rest = s3.list_buckets(MaxBuckets=1, ContinuationToken=first["ContinuationToken"])
    expect([b["Name"] for b in rest["Buckets"]] == ["beta"] and "ContinuationToken" not in rest, rest)
    ok("buckets")


def objects():
    body = b"hello, kalavara" * 100
    put = s3.put_object(Bucket="alpha", Key="dir/hello.txt", Body=body, ContentType="text/plain",
                        Metadata={"colour": "blue", "Owner": "ops"}, ACL="private")
    expect(put["ETag"] == '"%s"' % md5(body), put["ETag"])
    got = s3.get_object(Bucket="alpha", Key="dir/hello.txt")
    expect(got["Body"].read() == body)
    expect(got["ContentType"] == "text/plain" and got["Metadata"] == {"colour": "blue", "owner": "ops"}, got["Metadata"])
    expect(got["ETag"] == put["ETag"])
    head = s3.head_object(Bucket="alpha", Key="dir/hello.txt", VersionId="null")
    expect(head["ContentLength"] == len(body) and head["ETag"] == put["ETag"])
    expect(native("alpha/dir/hello.txt").content == body, "the native API reads what S3 wrote")
    # Conditional writes.
    expect(error_code(s3.put_object, Bucket="alpha", Key="dir/hello.txt", Body=b"no", IfNoneMatch="*")[0] == "PreconditionFailed")
    expect(error_code(s3.put_object, Bucket="alpha", Key="dir/hello.txt", Body=b"no", IfMatch='"0123"')[0] == "PreconditionFailed")
    expect(error_code(s3.put_object, Bucket="alpha", Key="nothing-here", Body=b"no", IfMatch="*")[0] == "NoSuchKey")
    s3.put_object(Bucket="alpha", Key="dir/hello.txt", Body=body, IfMatch=put["ETag"])
    # Overwrite, then delete.
    s3.put_object(Bucket="alpha", Key="dir/hello.txt", Body=b"second")
    expect(s3.get_object(Bucket="alpha", Key="dir/hello.txt")["Body"].read() == b"second")
    expect(s3.get_object(Bucket="alpha", Key="dir/hello.txt")["ContentType"] == "binary/octet-stream")
    s3.delete_object(Bucket="alpha", Key="dir/hello.txt")
    expect(error_code(s3.get_object, Bucket="alpha", Key="dir/hello.txt") == ("NoSuchKey", 404))
    expect(native("alpha/dir/hello.txt").status_code == 404)
    s3.delete_object(Bucket="alpha", Key="never-there")  # S3 answers 204 for a missing key too
    # Odd keys: spaces, UTF-8, dots, a question mark, a plus.
    for key in ["a b/ü ñ.txt", "../x/./y", "what?now+then", "dots..and//slashes/"]:
        s3.put_object(Bucket="alpha", Key=key, Body=key.encode())
        expect(s3.get_object(Bucket="alpha", Key=key)["Body"].read() == key.encode(), key)
    s3.put_object(Bucket="alpha", Key="empty", Body=b"")
    expect(s3.get_object(Bucket="alpha", Key="empty")["Body"].read() == b"")
    ok("objects")


def ranges_and_conditions():
    data = bytes(range(256)) * 40
    etag = s3.put_object(Bucket="alpha", Key="r", Body=data)["ETag"]
    part = s3.get_object(Bucket="alpha", Key="r", Range="bytes=10-19")
    expect(part["Body"].read() == data[10:20] and part["ContentRange"] == "bytes 10-19/%d" % len(data))
    expect(s3.get_object(Bucket="alpha", Key="r", Range="bytes=-5")["Body"].read() == data[-5:])
    expect(error_code(s3.get_object, Bucket="alpha", Key="r", Range="bytes=999999-")[0] == "InvalidRange")
    expect(error_code(s3.get_object, Bucket="alpha", Key="r", IfNoneMatch=etag)[1] == 304)
    expect(error_code(s3.get_object, Bucket="alpha", Key="r", IfMatch='"0000"')[0] == "PreconditionFailed")
    expect(s3.get_object(Bucket="alpha", Key="r", IfMatch=etag)["Body"].read() == data)
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    expect(error_code(s3.get_object, Bucket="alpha", Key="r", IfModifiedSince=future)[1] == 304)
    expect(error_code(s3.get_object, Bucket="alpha", Key="r", IfUnmodifiedSince=past)[0] == "PreconditionFailed")
    ok("ranges_and_conditions")


def listing():
    for key in ["list/a", "list/b", "list/c/1", "list/c/2", "list/d/1", "list/e", "list/f"]:
        s3.put_object(Bucket="alpha", Key=key, Body=b"x")
    page = s3.list_objects_v2(Bucket="alpha", Prefix="list/", Delimiter="/")
    expect([c["Key"] for c in page["Contents"]] == ["list/a", "list/b", "list/e", "list/f"], page)
    expect([p["Prefix"] for p in page["CommonPrefixes"]] == ["list/c/", "list/d/"])
    expect(all(c["ETag"] == '"%s"' % md5(b"x") and c["Size"] == 1 for c in page["Contents"]))
    # Paging: two entries (keys or prefixes) a page, V2 tokens and V1 markers alike.
    for paginator, name in [(s3.get_paginator("list_objects_v2"), "v2"), (s3.get_paginator("list_objects"), "v1")]:
        seen, prefixes, pages = [], [], 0
        for page in paginator.paginate(Bucket="alpha", Prefix="list/", Delimiter="/", PaginationConfig={"PageSize": 2}):
            pages += 1
            seen += [c["Key"] for c in page.get("Contents", [])]
            prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        expect(seen == ["list/a", "list/b", "list/e", "list/f"] and prefixes == ["list/c/", "list/d/"], (name, seen, prefixes))
        expect(pages == 3, (name, pages))
    whole = s3.list_objects(Bucket="alpha", Prefix="list/")
    expect(len(whole["Contents"]) == 7 and not whole["IsTruncated"])
    s3.put_object(Bucket="alpha", Key="list/sp ace&amp", Body=b"x")
    raw = s3.list_objects_v2(Bucket="alpha", Prefix="list/sp", EncodingType="url")  # asked for: boto3 leaves it encoded
    expect(raw["Contents"][0]["Key"] == "list/sp%20ace%26amp", raw["Contents"][0]["Key"])
    expect(s3.list_objects_v2(Bucket="alpha", Prefix="list/sp")["Contents"][0]["Key"] == "list/sp ace&amp")
    versions = s3.list_object_versions(Bucket="alpha", Prefix="list/")
    expect(len(versions["Versions"]) == 8 and versions["Versions"][0]["VersionId"] == "null")
    ok("listing")


def copy_and_delete_objects():
    s3.put_object(Bucket="alpha", Key="src", Body=b"copy me", ContentType="text/x-source", Metadata={"m": "1"})
    copied = s3.copy_object(Bucket="beta", Key="dst", CopySource={"Bucket": "alpha", "Key": "src"})
    expect(copied["CopyObjectResult"]["ETag"] == '"%s"' % md5(b"copy me"))
    dst = s3.get_object(Bucket="beta", Key="dst")
    expect(dst["Body"].read() == b"copy me" and dst["ContentType"] == "text/x-source" and dst["Metadata"] == {"m": "1"})
    s3.copy_object(Bucket="alpha", Key="src", CopySource="alpha/src", MetadataDirective="REPLACE",
                   ContentType="text/plain", Metadata={"m": "2"})
    head = s3.head_object(Bucket="alpha", Key="src")
    expect(head["ContentType"] == "text/plain" and head["Metadata"] == {"m": "2"})
    expect(error_code(s3.copy_object, Bucket="alpha", Key="src", CopySource="alpha/src")[0] == "InvalidRequest")
    for key in ["del/1", "del/2", "del/3"]:
        s3.put_object(Bucket="alpha", Key=key, Body=b"d")
    result = s3.delete_objects(Bucket="alpha", Delete={"Objects": [{"Key": "del/1"}, {"Key": "del/2"}, {"Key": "del/nothing"}]})
    expect(sorted(d["Key"] for d in result["Deleted"]) == ["del/1", "del/2", "del/nothing"], result)
    quiet = s3.delete_objects(Bucket="alpha", Delete={"Objects": [{"Key": "del/3"}], "Quiet": True})
    expect("Deleted" not in quiet)
    expect(s3.list_objects_v2(Bucket="alpha", Prefix="del/")["KeyCount"] == 0)
    ok("copy_and_delete_objects")


def presigned():
    s3.put_object(Bucket="alpha", Key="shared", Body=b"for a browser")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "shared"}, ExpiresIn=300)
    expect("AWSAccessKeyId=" in url)  # boto3's default presigner still signs the legacy way (V2)
    expect(requests.get(url, timeout=10).content == b"for a browser")
    v4 = boto3.client("s3", endpoint_url=ENDPOINT, aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name="us-east-1",
                      config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    url = v4.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "shared",
                                                          "ResponseContentType": "text/x-shared"}, ExpiresIn=300)
    expect("X-Amz-Signature=" in url)
    answer = requests.get(url, timeout=10)
    expect(answer.content == b"for a browser" and answer.headers["Content-Type"] == "text/x-shared", answer.headers)
    tampered = url.replace("shared", "shared2") if "shared2" not in url else url
    expect(requests.get(tampered, timeout=10).status_code == 403)
    with signing_clock(-datetime.timedelta(seconds=120)):
        expired = v4.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "shared"}, ExpiresIn=60)
    answer = requests.get(expired, timeout=10)
    expect(answer.status_code == 403 and b"expired" in answer.content, answer.content)
    expired_v2 = s3.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "shared"}, ExpiresIn=-10)
    expect(requests.get(expired_v2, timeout=10).status_code == 403)
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "alpha", "Key": "uploaded"}, ExpiresIn=300)
    expect(requests.put(put_url, data=b"via presigned PUT", timeout=10).status_code == 200)
    expect(s3.get_object(Bucket="alpha", Key="uploaded")["Body"].read() == b"via presigned PUT")
    ok("presigned")


def credentials():
    expect(error_code(client(secret="wrong").list_buckets) == ("SignatureDoesNotMatch", 403))
    expect(error_code(client(key="nobody").list_buckets) == ("InvalidAccessKeyId", 403))
    reader = client(RO_KEY, RO_SECRET)
    expect(reader.get_object(Bucket="alpha", Key="shared")["Body"].read() == b"for a browser")
    expect(error_code(reader.put_object, Bucket="alpha", Key="nope", Body=b"x") == ("AccessDenied", 403))
    expect(requests.get(ENDPOINT + "/alpha/shared", timeout=10).status_code == 403)  # anonymous
    with signing_clock(-datetime.timedelta(minutes=20)):
        expect(error_code(s3.list_buckets)[0] == "RequestTimeTooSkewed")
    ok("credentials")


def checksums():
    data = b"checked" * 1000
    crc = base64.b64encode(__import__("zlib").crc32(data).to_bytes(4, "big")).decode()
    s3.put_object(Bucket="alpha", Key="ck", Body=data, ChecksumCRC32=crc)
    expect(error_code(s3.put_object, Bucket="alpha", Key="ck", Body=b"other", ChecksumCRC32=crc)[0] == "BadDigest")
    expect(s3.get_object(Bucket="alpha", Key="ck")["Body"].read() == data, "a failed checksum changed nothing")
    bad_md5 = base64.b64encode(hashlib.md5(b"not it").digest()).decode()
    expect(error_code(s3.put_object, Bucket="alpha", Key="ck", Body=b"other", ContentMD5=bad_md5)[0] == "BadDigest")
    s3.put_object(Bucket="alpha", Key="ck-sha256", Body=data, ChecksumAlgorithm="SHA256")
    def crc32c(data):
        crc = 0xFFFFFFFF
        for byte in data:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        return crc ^ 0xFFFFFFFF
    expect(crc32c(b"123456789") == 0xE3069283)
    value = base64.b64encode(crc32c(data).to_bytes(4, "big")).decode()
    s3.put_object(Bucket="alpha", Key="ck-crc32c", Body=data, ChecksumCRC32C=value)
    expect(error_code(s3.put_object, Bucket="alpha", Key="ck-crc32c", Body=data + b"!", ChecksumCRC32C=value)[0] == "BadDigest")
    s3.put_object(Bucket="alpha", Key="ck-sha1", Body=data, ChecksumAlgorithm="SHA1")

    class Unseekable(io.RawIOBase):  # a pipe: boto3 streams it aws-chunked, checksum in the trailer
        def __init__(self, data):
            self.inner = io.BytesIO(data)
        def readable(self):
            return True
        def readinto(self, buffer):
            chunk = self.inner.read(len(buffer))
            buffer[:len(chunk)] = chunk
            return len(chunk)
    streamed = os.urandom(3 * 1024 * 1024 + 17)
    s3.upload_fileobj(Unseekable(streamed), "alpha", "streamed")
    expect(s3.get_object(Bucket="alpha", Key="streamed")["Body"].read() == streamed)
    ok("checksums")


def signed_chunks():
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD upload built by hand: valid, then one chunk forged."""
    def upload(key, chunks, forge=False):
        from botocore.compat import get_current_datetime
        now = get_current_datetime()
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        decoded = sum(len(c) for c in chunks)
        url = "%s/alpha/%s" % (ENDPOINT, key)
        request = AWSRequest(method="PUT", url=url, headers={
            "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "x-amz-decoded-content-length": str(decoded),
            "Content-Encoding": "aws-chunked", "x-amz-date": stamp})
        with mock.patch("botocore.auth.get_current_datetime", return_value=now):
            SigV4Auth(Credentials(KEY, SECRET), "s3", "us-east-1").add_auth(request)
        seed = request.headers["Authorization"].split("Signature=")[1]
        scope = "%s/us-east-1/s3/aws4_request" % day
        signing_key = ("AWS4" + SECRET).encode()
        for part in [day, "us-east-1", "s3", "aws4_request"]:
            signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
        previous, body = seed, b""
        for chunk in chunks + [b""]:
            text = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", stamp, scope, previous, hashlib.sha256(b"").hexdigest(),
                              hashlib.sha256(chunk).hexdigest()])
            signature = hmac.new(signing_key, text.encode(), hashlib.sha256).hexdigest()
            sent = chunk
            if forge and chunk and chunk is chunks[-1]:
                sent = b"X" + chunk[1:]
            body += b"%x;chunk-signature=%s\r\n" % (len(sent), signature.encode()) + sent + b"\r\n"
            previous = signature
        headers = dict(request.headers)
        return requests.put(url, data=body, headers=headers, timeout=30)
    chunks = [os.urandom(64 * 1024), os.urandom(64 * 1024), b"tail"]
    answer = upload("chunked", chunks)
    expect(answer.status_code == 200, answer.content)
    expect(s3.get_object(Bucket="alpha", Key="chunked")["Body"].read() == b"".join(chunks))
    answer = upload("forged", chunks, forge=True)
    expect(answer.status_code == 403 and b"SignatureDoesNotMatch" in answer.content, answer.content)
    expect(error_code(s3.head_object, Bucket="alpha", Key="forged")[1] == 404, "a forged chunk stores nothing")
    expect(native("alpha/forged").status_code == 404)
    ok("signed_chunks")


def multipart():
    five = 5 * 1024 * 1024
    first, second, third = os.urandom(five), os.urandom(five), os.urandom(1234)
    upload = s3.create_multipart_upload(Bucket="alpha", Key="mp/object", ContentType="application/x-test",
                                        Metadata={"kind": "multipart"})
    uid = upload["UploadId"]
    tags = [s3.upload_part(Bucket="alpha", Key="mp/object", UploadId=uid, PartNumber=n, Body=b)["ETag"]
            for n, b in [(1, first), (2, second), (3, third)]]
    listed = s3.list_parts(Bucket="alpha", Key="mp/object", UploadId=uid)
    expect([p["PartNumber"] for p in listed["Parts"]] == [1, 2, 3] and listed["Parts"][2]["Size"] == 1234)
    expect(uid in [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="alpha")["Uploads"]])
    expect(error_code(s3.complete_multipart_upload, Bucket="alpha", Key="mp/object", UploadId=uid,
                      MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"00"'}]})[0] == "InvalidPart")
    done = s3.complete_multipart_upload(Bucket="alpha", Key="mp/object", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": t} for n, t in zip([1, 2, 3], tags)]})
    whole = first + second + third
    expected = hashlib.md5(b"".join(bytes.fromhex(t.strip('"')) for t in tags)).hexdigest() + "-3"
    expect(done["ETag"] == '"%s"' % expected, done)
    got = s3.get_object(Bucket="alpha", Key="mp/object")
    expect(got["Body"].read() == whole and got["ETag"] == done["ETag"] and got["Metadata"] == {"kind": "multipart"})
    expect(got["ContentType"] == "application/x-test")
    across = s3.get_object(Bucket="alpha", Key="mp/object", Range="bytes=%d-%d" % (five - 10, 2 * five + 9))
    expect(across["Body"].read() == whole[five - 10:2 * five + 10], "a range across part boundaries")
    expect(native("alpha/mp/object").content == whole)
    expect(error_code(s3.list_parts, Bucket="alpha", Key="mp/object", UploadId=uid)[0] == "NoSuchUpload")
    # A part copied from a range of another object.
    copied = s3.create_multipart_upload(Bucket="alpha", Key="mp/copied")["UploadId"]
    part = s3.upload_part_copy(Bucket="alpha", Key="mp/copied", UploadId=copied, PartNumber=1,
                               CopySource={"Bucket": "alpha", "Key": "mp/object"}, CopySourceRange="bytes=100-199")
    expect(part["CopyPartResult"]["ETag"] == '"%s"' % md5(whole[100:200]))
    expect(error_code(s3.upload_part_copy, Bucket="alpha", Key="mp/copied", UploadId=copied, PartNumber=2,
                      CopySource={"Bucket": "alpha", "Key": "mp/object"}, CopySourceRange="bytes=0-%d" % len(whole))[0] == "InvalidRange")
    s3.complete_multipart_upload(Bucket="alpha", Key="mp/copied", UploadId=copied,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    expect(s3.get_object(Bucket="alpha", Key="mp/copied")["Body"].read() == whole[100:200])
    # Too small a part, and an abort.
    small = s3.create_multipart_upload(Bucket="alpha", Key="mp/small")["UploadId"]
    small_tags = [s3.upload_part(Bucket="alpha", Key="mp/small", UploadId=small, PartNumber=n, Body=b"tiny")["ETag"] for n in (1, 2)]
    expect(error_code(s3.complete_multipart_upload, Bucket="alpha", Key="mp/small", UploadId=small, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": t} for n, t in zip([1, 2], small_tags)]})[0] == "EntityTooSmall")
    s3.abort_multipart_upload(Bucket="alpha", Key="mp/small", UploadId=small)
    expect(error_code(s3.list_parts, Bucket="alpha", Key="mp/small", UploadId=small)[0] == "NoSuchUpload")
    # Parts of completed and aborted uploads are gone from the index (a moment later for completion).
    deadline = time.time() + 10
    while time.time() < deadline and index_keys(".s3/parts/"):
        time.sleep(0.2)
    expect(index_keys(".s3/parts/") == [])
    ok("multipart")


def abandoned_uploads_are_swept():
    sweeping = client(endpoint=SWEEP_ENDPOINT)
    uid = sweeping.create_multipart_upload(Bucket="alpha", Key="left/behind")["UploadId"]
    sweeping.upload_part(Bucket="alpha", Key="left/behind", UploadId=uid, PartNumber=1, Body=b"forgotten")
    expect(index_keys(".s3/parts/" + uid))
    deadline = time.time() + 20
    while time.time() < deadline and index_keys(".s3/parts/" + uid):
        time.sleep(0.5)
    expect(index_keys(".s3/parts/" + uid) == [], "parts swept")
    expect(uid not in [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="alpha").get("Uploads", [])])
    ok("abandoned_uploads_are_swept")


def aws_cli():
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")

    def aws(*args):
        quiet = ["--only-show-errors"] if args[1] in ("cp", "sync", "rm") else []
        result = subprocess.run(["aws", "--endpoint-url", ENDPOINT] + list(args) + quiet, env=env,
                                capture_output=True, text=True, timeout=600)
        expect(result.returncode == 0, (args, result.stdout, result.stderr))
        return result.stdout
    big = os.path.join(WORK, "big.bin")
    with open(big, "wb") as f:
        for _ in range(100):
            f.write(random.randbytes(1024 * 1024))
    aws("s3", "cp", big, "s3://alpha/cli/big.bin")
    head = s3.head_object(Bucket="alpha", Key="cli/big.bin")
    expect(head["ContentLength"] == 100 * 1024 * 1024 and head["ETag"].endswith('-13"'), head["ETag"])  # 8 MiB parts
    back = os.path.join(WORK, "big.back")
    aws("s3", "cp", "s3://alpha/cli/big.bin", back)
    expect(open(big, "rb").read() == open(back, "rb").read())
    tree = os.path.join(WORK, "tree")
    for path, size in [("a.txt", 10), ("sub/b.bin", 70000), ("sub/deeper/c", 0), ("sp ace/ü.txt", 5)]:
        os.makedirs(os.path.dirname(os.path.join(tree, path)), exist_ok=True)
        with open(os.path.join(tree, path), "wb") as f:
            f.write(os.urandom(size))
    aws("s3", "sync", tree, "s3://beta/tree")
    listed = aws("s3", "ls", "--recursive", "s3://beta/tree/")
    expect(listed.count("\n") == 4, listed)
    expect(aws("s3", "sync", tree, "s3://beta/tree") == "")  # nothing to do the second time
    down = os.path.join(WORK, "tree.down")
    aws("s3", "sync", "s3://beta/tree", down)
    for path in ["a.txt", "sub/b.bin", "sub/deeper/c", "sp ace/ü.txt"]:
        expect(open(os.path.join(tree, path), "rb").read() == open(os.path.join(down, path), "rb").read(), path)
    aws("s3", "rm", "--recursive", "s3://beta/tree")
    expect(s3.list_objects_v2(Bucket="beta", Prefix="tree/")["KeyCount"] == 0)
    ok("aws_cli")


def rclone():
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # rclone refuses a CA bundle on plain HTTP
    env.update(RCLONE_CONFIG_K_TYPE="s3", RCLONE_CONFIG_K_PROVIDER="Other", RCLONE_CONFIG_K_ENDPOINT=ENDPOINT,
               RCLONE_CONFIG_K_ACCESS_KEY_ID=KEY, RCLONE_CONFIG_K_SECRET_ACCESS_KEY=SECRET, RCLONE_CONFIG_K_FORCE_PATH_STYLE="true",
               RCLONE_CONFIG="/dev/null")
    tree = os.path.join(WORK, "rtree")
    os.makedirs(os.path.join(tree, "x"), exist_ok=True)
    with open(os.path.join(tree, "x", "one"), "wb") as f:
        f.write(os.urandom(20000))
    with open(os.path.join(tree, "big"), "wb") as f:  # over the 5 MiB cutoff set below: a multipart upload
        f.write(os.urandom(12 * 1024 * 1024))

    def run(*args):
        result = subprocess.run(["rclone", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M"] + list(args), env=env,
                                capture_output=True, text=True, timeout=300)
        expect(result.returncode == 0, (args, result.stdout, result.stderr))
        return result.stdout
    run("copy", tree, "k:beta/rclone")
    run("check", tree, "k:beta/rclone")  # compares sizes and MD5s
    expect(s3.head_object(Bucket="beta", Key="rclone/big")["ETag"].endswith('-3"'))
    run("purge", "k:beta/rclone")
    ok("rclone")


def delete_buckets():
    s3.put_object(Bucket="beta", Key="last", Body=b"x")
    expect(error_code(s3.delete_bucket, Bucket="beta") == ("BucketNotEmpty", 409))
    for entry in s3.list_objects_v2(Bucket="beta")["Contents"]:
        s3.delete_object(Bucket="beta", Key=entry["Key"])
    s3.delete_bucket(Bucket="beta")
    expect(error_code(s3.head_bucket, Bucket="beta")[1] == 404)
    ok("delete_buckets")


def review_edges():
    """What a review of the gateway found, each once a way in or a crash."""
    # A negative count is a 400, not a crash of the gateway.
    answer = requests.get(ENDPOINT + "/alpha?uploads&max-uploads=-1", auth=None, timeout=10)
    expect(answer.status_code in (400, 403), answer.status_code)
    expect(error_code(s3.list_multipart_uploads, Bucket="alpha", MaxUploads=-1)[0] == "InvalidArgument")
    s3.list_buckets()  # still up
    # Headers the signature does not cover cannot turn a presigned PUT into a copy.
    s3.put_object(Bucket="alpha", Key="private", Body=b"secret")
    v4 = boto3.client("s3", endpoint_url=ENDPOINT, aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name="us-east-1",
                      config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    url = v4.generate_presigned_url("put_object", Params={"Bucket": "alpha", "Key": "upload-here"}, ExpiresIn=300)
    answer = requests.put(url, data=b"", headers={"x-amz-copy-source": "/alpha/private"}, timeout=10)
    expect(answer.status_code == 403 and b"HeadersNotSigned" in answer.content, answer.content)
    expect(error_code(s3.head_object, Bucket="alpha", Key="upload-here")[1] == 404)
    # The gateway's own keys and keys outside any bucket are not objects of any bucket.
    expect(error_code(s3.delete_object, Bucket=".s3", Key="buckets/alpha")[0] == "NoSuchBucket")
    expect(error_code(s3.get_object, Bucket=".s3", Key="buckets/alpha")[0] == "NoSuchBucket")
    s3.head_bucket(Bucket="alpha")
    requests.put(MASTER + "/store/loose-key", data=b"native only", timeout=10, auth=MASTER_AUTH)
    expect(error_code(s3.get_object, Bucket="loose-key", Key="x")[0] == "NoSuchBucket")
    # A failed empty PUT changes nothing.
    s3.put_object(Bucket="alpha", Key="keep-me", Body=b"kept")
    wrong = base64.b64encode(hashlib.md5(b"x").digest()).decode()
    expect(error_code(s3.put_object, Bucket="alpha", Key="keep-me", Body=b"", ContentMD5=wrong)[0] == "BadDigest")
    expect(s3.get_object(Bucket="alpha", Key="keep-me")["Body"].read() == b"kept")
    # No header injection through response-* overrides.
    url = v4.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "keep-me",
                                                          "ResponseContentType": "text/html\r\nSet-Cookie: a=b"}, ExpiresIn=300)
    answer = requests.get(url, timeout=10)
    expect(answer.status_code == 400 and "Set-Cookie" not in answer.headers, (answer.status_code, answer.headers))
    # Metadata that S3 allows but the index cannot hold once encoded: 400, not 500.
    expect(error_code(s3.put_object, Bucket="alpha", Key="meta", Body=b"x", Metadata={"note": "%" * 2000})[0] == "MetadataTooLarge")
    # A copy reads its source: a write-only key may not.
    writer = client(WO_KEY, WO_SECRET)
    writer.put_object(Bucket="alpha", Key="written", Body=b"w")
    expect(error_code(writer.copy_object, Bucket="alpha", Key="stolen", CopySource="alpha/private")[0] == "AccessDenied")
    # An upload belongs to its key.
    uid = s3.create_multipart_upload(Bucket="alpha", Key="owned")["UploadId"]
    expect(error_code(s3.upload_part, Bucket="alpha", Key="other", UploadId=uid, PartNumber=1, Body=b"x")[0] == "NoSuchUpload")
    expect(error_code(s3.abort_multipart_upload, Bucket="alpha", Key="other", UploadId=uid)[0] == "NoSuchUpload")
    s3.abort_multipart_upload(Bucket="alpha", Key="owned", UploadId=uid)
    ok("review_edges")


CHECKS = [buckets, objects, ranges_and_conditions, listing, copy_and_delete_objects, presigned, credentials, checksums,
          signed_chunks, multipart, review_edges, aws_cli, rclone, delete_buckets, abandoned_uploads_are_swept]

if __name__ == "__main__":
    only = sys.argv[1:]
    for check in CHECKS:
        if not only or check.__name__ in only:
            check()
