# Schemathesis hooks for tests/fuzz_api.rs: a tar upload body is bytes, sent as they are
# (the server must refuse what is not a tar, cleanly).
import schemathesis

schemathesis.serializer.alias("application/x-tar", "application/octet-stream")
