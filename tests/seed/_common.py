"""Shared by the seed scripts: where the broker is.

The original seed examples hard-code bootstrap_servers="localhost:9092"; here
it comes from the environment variable BOOTSTRAP_SERVERS (default
localhost:9092, as in the seed).
"""
import os

BOOTSTRAP = os.environ.get("BOOTSTRAP_SERVERS", "localhost:9092")
# How long a consumer's iteration waits for a further message before it ends
# (the seed's consumers loop forever; the tests need them to stop).
CONSUMER_TIMEOUT_MS = int(os.environ.get("CONSUMER_TIMEOUT_MS", "5000"))
