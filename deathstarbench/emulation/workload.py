"""The mixed workload as HTTP requests: DeathStarBench's wrk2 `mixed-workload.lua`, one request per
scheduled send, drawn with a seeded generator so every policy replays the same requests.

60 % `GET /wrk2-api/home-timeline/read?user_id=U&start=S&stop=S+10`, 30 % the same on the user
timeline, 10 % `POST /wrk2-api/post/compose` (a 256-character text with 0-5 @mentions and 0-5
64-character urls, 0-4 media, as the script builds it). One deviation: `start` is drawn from
[0, 10) instead of the script's [0, 100], because the seeded timelines are short (the script
runs against timelines that long benchmarks filled) and a read past the end does no work.
"""

from __future__ import annotations

import json
import random
import string

import numpy as np

from runqscale.deathstarbench.emulation.callgraph import MIX

KINDS = ("read-home-timeline", "read-user-timeline", "compose-post")  # index = Records.kind
PATHS = {"read-home-timeline": "/wrk2-api/home-timeline/read",
         "read-user-timeline": "/wrk2-api/user-timeline/read",
         "compose-post": "/wrk2-api/post/compose"}
_CHARS = string.ascii_letters + string.digits


def _get(host: str, port: int, path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n").encode()


def _compose_body(rng: random.Random, users: int) -> bytes:
    uid = rng.randrange(users)
    text = "".join(rng.choices(_CHARS, k=256))
    for _ in range(rng.randint(0, 5)):
        text += f" @username_{rng.randrange(users)}"
    for _ in range(rng.randint(0, 5)):
        text += " http://" + "".join(rng.choices(_CHARS, k=64))
    n_media = rng.randint(0, 4)
    return json.dumps({
        "username": f"username_{uid}", "user_id": uid, "text": text,
        "media_ids": [rng.getrandbits(63) for _ in range(n_media)],
        "media_types": ["png"] * n_media, "post_type": 0}).encode()


def build(n: int, users: int, host: str, port: int, seed: int = 0,
          mix: dict[str, float] | None = None) -> tuple[list[bytes], np.ndarray]:
    """`n` requests of the mix (raw HTTP) and each one's kind (index into KINDS)."""
    mix = dict(MIX if mix is None else mix)
    rng = random.Random(seed)
    weights = [mix.get(k, 0.0) for k in KINDS]
    kinds = np.array(rng.choices(range(len(KINDS)), weights=weights, k=n), dtype=np.int8)
    out = []
    for k in kinds:
        name = KINDS[k]
        if name == "compose-post":
            body = _compose_body(rng, users)
            out.append((f"POST {PATHS[name]} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                        "Connection: close\r\n\r\n").encode() + body)
        else:
            start = rng.randrange(10)
            out.append(_get(host, port, f"{PATHS[name]}?user_id={rng.randrange(users)}"
                                        f"&start={start}&stop={start + 10}"))
    return out, kinds
