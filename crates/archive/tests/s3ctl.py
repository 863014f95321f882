"""Test helper for the S3 conformance tests, using boto3 (an S3 client independent of
the one under test) against the loopback S3 server named by VELLUM_TEST_S3.

  s3ctl.py mkbucket BUCKET          create a bucket with Object Lock enabled
  s3ctl.py retention BUCKET KEY     print "MODE RETAIN-UNTIL" of the latest version
  s3ctl.py delete-versions BUCKET KEY   try to delete every version; print what happened
  s3ctl.py overwrite BUCKET KEY     put different bytes as a new latest version
  s3ctl.py list BUCKET              print every object version and unfinished upload
"""
import datetime
import os
import sys

import boto3

client = boto3.client(
    "s3",
    endpoint_url=os.environ["VELLUM_TEST_S3"],
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)
command, bucket = sys.argv[1], sys.argv[2]
if command == "mkbucket":
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
elif command == "retention":
    head = client.head_object(Bucket=bucket, Key=sys.argv[3])
    until = head["ObjectLockRetainUntilDate"].astimezone(datetime.timezone.utc)
    print(head["ObjectLockMode"], until.strftime("%Y-%m-%dT%H:%M:%SZ"))
elif command == "delete-versions":
    versions = client.list_object_versions(Bucket=bucket, Prefix=sys.argv[3]).get("Versions", [])
    for version in versions:
        try:
            client.delete_object(Bucket=bucket, Key=sys.argv[3], VersionId=version["VersionId"])
            print("deleted")
        except client.exceptions.ClientError as error:
            print("refused", error.response["Error"]["Code"])
elif command == "overwrite":
    client.put_object(
        Bucket=bucket,
        Key=sys.argv[3],
        Body=b"not the sealed body",
        ChecksumAlgorithm="SHA256",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate="2100-01-01T00:00:00Z",
    )
elif command == "list":
    for version in client.list_object_versions(Bucket=bucket).get("Versions", []):
        print("object", version["Key"], version["VersionId"], version["Size"])
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        print("upload", upload["Key"], upload["UploadId"])
else:
    sys.exit(f"unknown command {command}")
