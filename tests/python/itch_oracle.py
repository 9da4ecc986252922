"""An independent ITCH 5.0 decoder for tests/itch.rs: decodes a file with the
PyPI package `itchfeed` (pure-Python path, `ITCH_NO_CPP=1`) and prints every
message as one JSON object per line, with itchfeed's own field names.

    ITCH_NO_CPP=1 target/tmp/venv/bin/python tests/python/itch_oracle.py feeds/sample.itch

Values are printed raw: integers as decoded (prices with their 4 implied
decimals, not divided), byte fields as Latin-1 strings *without* stripping
the padding, so the Rust side must reproduce every byte. The framing is
itchfeed's too (`MessageParser.parse_file`), which stops after the `S`
end-of-messages event: the Rust test checks that the counts agree.

Needs itchfeed 1.6.4: tests/itch.rs runs this with the venv of
tests/provision.rs (tests/python/requirements.txt).
"""

import gzip
import json
import os
import sys

os.environ.setdefault("ITCH_NO_CPP", "1")

import itch  # noqa: E402
from itch.parser import MessageParser  # noqa: E402


def fields(message):
    """Every attribute the message instance holds, plus its type."""
    out = {"message_type": message.message_type.decode("latin-1")}
    for name, value in vars(message).items():
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        out[name] = value
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: itch_oracle.py FILE")
    if itch.USING_CPP_BACKEND:
        sys.exit("itchfeed uses its C++ backend: set ITCH_NO_CPP=1")
    path = sys.argv[1]
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    count = 0
    with opener(path, "rb") as f:
        out = sys.stdout
        for message in MessageParser().parse_file(f):
            out.write(json.dumps(fields(message), sort_keys=True))
            out.write("\n")
            count += 1
    print(f"itchfeed {itch.__version__}: {count} messages", file=sys.stderr)


if __name__ == "__main__":
    main()
