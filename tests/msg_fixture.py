"""A small writer of Outlook .msg files, from the published formats: [MS-CFB] (compound file,
version 3: 512-byte sectors, FAT, mini stream for streams under 4096 bytes, directory with a
red-black sibling tree per storage) holding [MS-OXMSG] property streams. No library writes them;
this one writes exactly what the tests need and nothing more.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime

SECTOR = 512
MINI = 64
CUTOFF = 4096
FREESECT, ENDOFCHAIN, FATSECT, NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF


@dataclass
class Node:
    name: str
    data: bytes | None = None  # a stream; None: a storage
    children: list[Node] = field(default_factory=list)

    def add(self, node: Node) -> Node:
        self.children.append(node)
        return node


def _key(name: str) -> tuple[int, str]:
    """[MS-CFB] 2.6.4: shorter names first, then by upper-cased code points."""
    return (len(name), name.upper())


def write_cfb(root: Node) -> bytes:
    entries: list[tuple[Node, int]] = []  # (node, object type)

    def number(node: Node, kind: int) -> None:
        entries.append((node, kind))
        for child in node.children:
            number(child, 1 if child.data is None else 2)

    number(root, 5)
    ids = {id(node): i for i, (node, _) in enumerate(entries)}
    # sibling trees: a balanced binary search tree over each storage's children, all black
    left = [NOSTREAM] * len(entries)
    right = [NOSTREAM] * len(entries)
    child_of = [NOSTREAM] * len(entries)

    def tree(nodes: list[Node]) -> int:
        if not nodes:
            return NOSTREAM
        mid = len(nodes) // 2
        me = ids[id(nodes[mid])]
        left[me] = tree(nodes[:mid])
        right[me] = tree(nodes[mid + 1:])
        return me

    for node, _kind in entries:
        if node.children:
            child_of[ids[id(node)]] = tree(sorted(node.children, key=lambda n: _key(n.name)))

    # mini stream: small streams in 64-byte mini sectors
    mini = bytearray()
    minifat: list[int] = []
    start = [ENDOFCHAIN] * len(entries)
    size = [0] * len(entries)
    big: list[tuple[int, bytes]] = []
    for i, (node, kind) in enumerate(entries):
        if kind != 2:
            continue
        data = node.data or b""
        size[i] = len(data)
        if not data:
            continue
        if len(data) < CUTOFF:
            first = len(mini) // MINI
            count = -(-len(data) // MINI)
            minifat.extend(range(first + 1, first + count))
            minifat.append(ENDOFCHAIN)
            mini += data.ljust(count * MINI, b"\x00")
            start[i] = first
        else:
            big.append((i, data))

    sectors: list[bytes] = []
    fat: list[int] = []

    def place(data: bytes) -> int:
        count = -(-len(data) // SECTOR)
        first = len(sectors)
        for k in range(count):
            sectors.append(data[k * SECTOR:(k + 1) * SECTOR].ljust(SECTOR, b"\x00"))
            fat.append(first + k + 1 if k < count - 1 else ENDOFCHAIN)
        return first

    for i, data in big:
        start[i] = place(data)
    if mini:
        start[0] = place(bytes(mini))
        size[0] = len(mini)
    minifat_start = place(b"".join(struct.pack("<I", v) for v in minifat).ljust(SECTOR, b"\xff")) if minifat else ENDOFCHAIN
    minifat_count = -(-len(minifat) * 4 // SECTOR) if minifat else 0

    directory = bytearray()
    for i, (node, kind) in enumerate(entries):
        name = ("Root Entry" if kind == 5 else node.name).encode("utf-16-le") + b"\x00\x00"
        if len(name) > 64:
            raise ValueError(f"name too long: {node.name}")
        directory += name.ljust(64, b"\x00")
        directory += struct.pack("<HBB", len(name), kind, 1)
        directory += struct.pack("<III", left[i], right[i], child_of[i])
        directory += b"\x00" * 16 + struct.pack("<I", 0) + b"\x00" * 16
        directory += struct.pack("<IQ", start[i], size[i])
    while len(directory) % SECTOR:  # unused entries
        directory += b"\x00" * 64 + struct.pack("<HBB", 0, 0, 0) + struct.pack("<III", NOSTREAM, NOSTREAM, NOSTREAM)
        directory += b"\x00" * 36 + struct.pack("<IQ", 0, 0)
    dir_start = place(bytes(directory))

    n_fat = 1
    while (len(sectors) + n_fat) > n_fat * (SECTOR // 4):
        n_fat += 1
    if n_fat > 109:
        raise ValueError("too big for a header-only DIFAT")
    fat_first = len(sectors)
    fat.extend([FATSECT] * n_fat)
    fat_bytes = b"".join(struct.pack("<I", v) for v in fat).ljust(n_fat * SECTOR, b"\xff")
    for k in range(n_fat):
        sectors.append(fat_bytes[k * SECTOR:(k + 1) * SECTOR])

    header = bytearray()
    header += b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 16
    header += struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6) + b"\x00" * 6
    header += struct.pack("<IIIIIIIII", 0, n_fat, dir_start, 0, CUTOFF, minifat_start, minifat_count, ENDOFCHAIN, 0)
    difat = [fat_first + k for k in range(n_fat)] + [FREESECT] * (109 - n_fat)
    header += b"".join(struct.pack("<I", v) for v in difat)
    assert len(header) == SECTOR
    return bytes(header) + b"".join(sectors)


# ---------------------------------------------------------------------------- .msg on top of it
def _filetime(when: datetime) -> int:
    return int((when - datetime(1601, 1, 1, tzinfo=UTC)).total_seconds() * 10_000_000)


def _props(header: int, fixed: list[tuple[int, int, int]], strings: list[tuple[int, int, int]]) -> bytes:
    """[MS-OXMSG] 2.4 property stream: `header` bytes, then 16 bytes per property."""
    out = bytearray(header)
    for prop, ptype, value in fixed:
        out += struct.pack("<IIQ", (prop << 16) | ptype, 0x6, value)
    for prop, ptype, length in strings:  # variable-size: the size only, the value is in its own stream
        out += struct.pack("<IIII", (prop << 16) | ptype, 0x6, length, 0)
    return bytes(out)


def _string_node(node: Node, prop: int, text: str) -> tuple[int, int, int]:
    data = text.encode("utf-16-le")
    node.add(Node(f"__substg1.0_{prop:04X}001F", data))
    return (prop, 0x001F, len(data) + 2)


def _binary_node(node: Node, prop: int, data: bytes) -> tuple[int, int, int]:
    node.add(Node(f"__substg1.0_{prop:04X}0102", data))
    return (prop, 0x0102, len(data))


def message_node(node: Node, *, subject: str, body: str, sender: str, to: list[str], cc: list[str] = (),
                 bcc: list[str] = (), html: str | None = None, attachments: list[tuple[str, bytes]] = (),
                 embedded: list[dict] = (), when: datetime | None = None, message_id: str = "",
                 embedded_level: bool = False, rtf: bytes | None = None) -> Node:
    strings = [_string_node(node, 0x001A, "IPM.Note"), _string_node(node, 0x0037, subject), _string_node(node, 0x0C1F, sender),
               _string_node(node, 0x0C1A, sender.split("@")[0])]
    if body:
        strings.append(_string_node(node, 0x1000, body))
    if html is not None:
        strings.append(_binary_node(node, 0x1013, html.encode("utf-8")))
    if rtf is not None:
        strings.append(_binary_node(node, 0x1009, rtf))
    if message_id:
        strings.append(_string_node(node, 0x1035, message_id))
    fixed = [(0x0E07, 0x0003, 1)]  # PR_MESSAGE_FLAGS: read
    if when is not None:
        fixed.append((0x0039, 0x0040, _filetime(when)))
    recipients = [(1, a) for a in to] + [(2, a) for a in cc] + [(3, a) for a in bcc]
    for n, (kind, address) in enumerate(recipients):
        r = node.add(Node(f"__recip_version1.0_#{n:08X}"))
        rs = [_string_node(r, 0x39FE, address), _string_node(r, 0x3001, address.split("@")[0])]
        r.add(Node("__properties_version1.0", _props(8, [(0x0C15, 0x0003, kind), (0x3000, 0x0003, n)], rs)))
    index = 0
    for filename, data in attachments:
        a = node.add(Node(f"__attach_version1.0_#{index:08X}"))
        index += 1
        ss = [_string_node(a, 0x3707, filename), _binary_node(a, 0x3701, data)]
        a.add(Node("__properties_version1.0", _props(8, [(0x3705, 0x0003, 1), (0x0E21, 0x0003, index)], ss)))
    for inner in embedded:
        a = node.add(Node(f"__attach_version1.0_#{index:08X}"))
        index += 1
        ss = [_string_node(a, 0x3707, inner.get("filename", "fwd.msg"))]
        obj = a.add(Node("__substg1.0_3701000D"))
        message_node(obj, **{k: v for k, v in inner.items() if k != "filename"}, embedded_level=True)
        a.add(Node("__properties_version1.0", _props(8, [(0x3705, 0x0003, 5), (0x0E21, 0x0003, index)], ss)))
    header = 24 if embedded_level else 32
    head = bytearray(header)
    if not embedded_level:
        struct.pack_into("<IIII", head, 8, len(recipients), index, len(recipients), index)
    node.add(Node("__properties_version1.0", bytes(head) + _props(0, fixed, strings)))
    if not embedded_level:
        node.add(Node("__nameid_version1.0"))
    return node


def write_msg(**kwargs: object) -> bytes:
    """A .msg file: keyword arguments as `message_node`."""
    root = Node("Root Entry")
    message_node(root, **kwargs)  # type: ignore[arg-type]
    nameid = next(c for c in root.children if c.name == "__nameid_version1.0")
    for name in ("__substg1.0_00020102", "__substg1.0_00030102", "__substg1.0_00040102"):
        nameid.add(Node(name, b""))
    return write_cfb(root)


def compress_rtf_stored(rtf: bytes) -> bytes:
    """[MS-OXRTFCP] uncompressed form ("MELA"): what a reader must accept as well."""
    return struct.pack("<IIII", len(rtf) + 12, len(rtf), 0x414C454D, 0) + rtf


def compress_rtf_literal(rtf: bytes) -> bytes:
    """[MS-OXRTFCP] "LZFu" with literal runs only, then the end reference (offset = write position)."""
    wpos = (207 + len(rtf)) & 0xFFF  # the prebuffer is 207 bytes
    tokens: list[tuple[bool, bytes]] = [(False, bytes([b])) for b in rtf] + [(True, struct.pack(">H", wpos << 4))]
    body = bytearray()
    for k in range(0, len(tokens), 8):
        group = tokens[k:k + 8]
        body.append(sum(1 << bit for bit, (is_ref, _) in enumerate(group) if is_ref))
        for _, data in group:
            body += data
    return struct.pack("<IIII", len(body) + 12, len(rtf), 0x75465A4C, 0) + bytes(body)
