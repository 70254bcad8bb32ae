"""A small writer of Outlook .pst files (Unicode, unencrypted), from [MS-PST]: the NDB layer
(header with CRCs, an AMap page, node and block B-trees, blocks with trailers and signatures,
subnode blocks) and the LTP layer (heap-on-node, BTree-on-heap, property and table contexts),
holding a root folder, one mail folder and its messages with recipients and attachments.
No library writes PSTs; this writes exactly what the tests need.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

PAGE = 512
BLOCK_MAX = 8176
AMAP_AT = 0x4400
PMAP_AT = 0x4600
DATA_AT = 0x4800

PT_INT32, PT_BOOL, PT_TIME, PT_STRING, PT_BINARY = 0x0003, 0x000B, 0x0040, 0x001F, 0x0102


def crc(data: bytes) -> int:
    """[MS-PST] 5.3: CRC-32 (reflected 0xEDB88320) starting from 0 without the final inversion."""
    return (~zlib.crc32(data, 0xFFFFFFFF)) & 0xFFFFFFFF


def sig(ib: int, bid: int) -> int:
    v = (ib ^ bid) & 0xFFFFFFFF
    return ((v >> 16) ^ v) & 0xFFFF


def filetime(when: datetime) -> int:
    return int((when - datetime(1601, 1, 1, tzinfo=UTC)).total_seconds() * 10_000_000)


# ------------------------------------------------------------------------------ LTP: heap-on-node
class Heap:
    """[MS-PST] 2.3.1: allocations addressed by HID (index << 5), one block."""

    def __init__(self, client_sig: int) -> None:
        self.client_sig = client_sig
        self.items: list[bytes] = []
        self.root = 0

    def alloc(self, data: bytes) -> int:
        self.items.append(data)
        return len(self.items) << 5

    def bytes(self) -> bytes:
        body = bytearray(12)
        offsets = []
        for item in self.items:
            offsets.append(len(body))
            body += item
        offsets.append(len(body))
        if len(body) % 2:
            body += b"\x00"
        ibhnpm = len(body)
        body += struct.pack("<HH", len(self.items), 0) + b"".join(struct.pack("<H", o) for o in offsets)
        struct.pack_into("<HBBI4s", body, 0, ibhnpm, 0xEC, self.client_sig, self.root, b"\x00" * 4)
        if len(body) > BLOCK_MAX:
            raise ValueError("heap larger than one block")
        return bytes(body)


def bth(heap: Heap, key_size: int, entry_size: int, records: list[tuple[bytes, bytes]]) -> int:
    """[MS-PST] 2.3.2: a BTree-on-heap with one leaf level; returns the header's HID."""
    root = heap.alloc(b"".join(k + v for k, v in sorted(records))) if records else 0
    return heap.alloc(struct.pack("<BBBBI", 0xB5, key_size, entry_size, 0, root))


Prop = tuple[int, int, object]  # (property id, type, value)


def _encode(ptype: int, value: object) -> bytes:
    if ptype == PT_STRING:
        return str(value).encode("utf-16-le")
    if ptype == PT_BINARY:
        return bytes(value)  # type: ignore[arg-type]
    if ptype == PT_TIME:
        return struct.pack("<Q", int(value))  # type: ignore[call-overload]
    if ptype == PT_INT32:
        return struct.pack("<I", int(value))  # type: ignore[call-overload]
    if ptype == PT_BOOL:
        return struct.pack("<I", 1 if value else 0)
    raise ValueError(ptype)


def property_context(props: list[Prop]) -> bytes:
    """[MS-PST] 2.3.3: a PC; values of up to 4 bytes inline, others on the heap (<= 3580 bytes)."""
    heap = Heap(0xBC)
    records = []
    for pid, ptype, value in props:
        data = _encode(ptype, value)
        if ptype in (PT_INT32, PT_BOOL):
            ref = struct.unpack("<I", data)[0]
        else:
            if len(data) > 3580:
                raise ValueError("value too big for the heap")
            ref = heap.alloc(data) if data else 0
        records.append((struct.pack("<H", pid), struct.pack("<HI", ptype, ref)))
    heap.root = bth(heap, 2, 6, records)
    return heap.bytes()


def table_context(columns: list[tuple[int, int]], rows: list[tuple[int, dict[int, object]]]) -> bytes:
    """[MS-PST] 2.3.4: a TC; `columns` (property id, type) besides the row id / version; rows as
    (row id, {property id: value})."""
    heap = Heap(0x7C)
    cols = [(0x67F2, PT_INT32), (0x67F3, PT_INT32)] + list(columns)
    width = {PT_INT32: 4, PT_BOOL: 1, PT_TIME: 8, PT_STRING: 4, PT_BINARY: 4}
    layout: dict[int, tuple[int, int, int]] = {}  # pid -> (ib, cb, ibit)
    ib = 0
    for size in (8, 4, 2, 1):  # larger values first, as [MS-PST] lays rows out
        for i, (pid, ptype) in enumerate(cols):
            if width[ptype] == size and pid not in layout:
                layout[pid] = (ib, size, i)
                ib += size
    if cols[0][0] != 0x67F2 or layout[0x67F2][0] != 0:
        raise AssertionError
    end_4b = sum(width[t] for _, t in cols if width[t] >= 4)
    end_2b = end_4b + sum(width[t] for _, t in cols if width[t] == 2)
    end_1b = end_2b + sum(width[t] for _, t in cols if width[t] == 1)
    ceb = (len(cols) + 7) // 8
    row_size = end_1b + ceb
    matrix = bytearray()
    index = []
    for n, (row_id, values) in enumerate(rows):
        row = bytearray(row_size)
        values = {0x67F2: row_id, 0x67F3: 1, **values}
        for pid, ptype in cols:
            if pid not in values:
                continue
            off, cb, ibit = layout[pid]
            data = _encode(ptype, values[pid])
            if ptype in (PT_STRING, PT_BINARY):
                data = struct.pack("<I", heap.alloc(data) if data else 0)
            row[off:off + cb] = data[:cb]
            row[end_1b + ibit // 8] |= 0x80 >> (ibit % 8)
        matrix += row
        index.append((struct.pack("<I", row_id), struct.pack("<I", n)))
    hid_index = bth(heap, 4, 4, index)
    hnid_rows = heap.alloc(bytes(matrix)) if rows else 0
    info = struct.pack("<BB4HIII", 0x7C, len(cols), end_4b, end_2b, end_1b, row_size, hid_index, hnid_rows, 0)
    for pid, ptype in sorted(cols):
        off, cb, ibit = layout[pid]
        info += struct.pack("<IHBB", (pid << 16) | ptype, off, cb, ibit)
    heap.root = heap.alloc(info)
    return heap.bytes()


# ------------------------------------------------------------------------------ NDB
@dataclass
class Node:
    nid: int
    data: bytes
    parent: int = 0
    subnodes: list[Node] = field(default_factory=list)


class Writer:
    def __init__(self) -> None:
        self.out = bytearray(DATA_AT)
        self.next_bid = 4
        self.bbt: list[tuple[int, int, int]] = []  # (bid, ib, cb)

    def _bid(self, internal: bool = False) -> int:
        bid = self.next_bid | (2 if internal else 0)
        self.next_bid += 4
        return bid

    def block(self, data: bytes, internal: bool = False) -> int:
        if len(data) > BLOCK_MAX:
            raise ValueError("block too big")
        bid = self._bid(internal)
        ib = len(self.out)
        size = -(-(len(data) + 16) // 64) * 64
        raw = data.ljust(size - 16, b"\x00")
        raw += struct.pack("<HHIQ", len(data), sig(ib, bid), crc(data), bid)
        self.out += raw
        self.bbt.append((bid, ib, len(data)))
        return bid

    def node(self, node: Node) -> tuple[int, int, int, int]:
        """(nid, bidData, bidSub, nidParent)."""
        data_bid = self.block(node.data)
        sub_bid = 0
        if node.subnodes:
            entries = sorted(self.node(s)[:3] for s in node.subnodes)
            sl = struct.pack("<BBHI", 0x02, 0, len(entries), 0) + b"".join(
                struct.pack("<QQQ", nid, data, sub) for nid, data, sub in entries)
            sub_bid = self.block(sl, internal=True)
        return node.nid, data_bid, sub_bid, node.parent

    def _page(self, body: bytes, ptype: int, bid: int, ib: int) -> bytes:
        body = body.ljust(PAGE - 16, b"\x00")
        signature = sig(ib, bid) if ptype in (0x80, 0x81) else 0
        return body + struct.pack("<BBHIQ", ptype, ptype, signature, crc(body), bid)

    def btree(self, ptype: int, entries: list[bytes], keys: list[int], entry_size: int) -> tuple[int, int]:
        """Leaf pages (and one intermediate level when needed); (bid, ib) of the root page."""
        per = 488 // entry_size
        leaves = [(entries[i:i + per], keys[i]) for i in range(0, len(entries), per)]
        refs = []
        for chunk, first in leaves:
            ib = self._align_page()
            bid = self._bid()
            body = b"".join(chunk).ljust(488, b"\x00") + struct.pack("<BBBBI", len(chunk), per, entry_size, 0, 0)
            self.out += self._page(body, ptype, bid, ib)
            refs.append((first, bid, ib))
        if len(refs) == 1:
            return refs[0][1], refs[0][2]
        if len(refs) > 20:
            raise ValueError("too many pages")
        ib = self._align_page()
        bid = self._bid()
        body = b"".join(struct.pack("<QQQ", k, b, i) for k, b, i in refs).ljust(488, b"\x00")
        body += struct.pack("<BBBBI", len(refs), 20, 24, 1, 0)
        self.out += self._page(body, ptype, bid, ib)
        return bid, ib

    def _align_page(self) -> int:
        while len(self.out) % PAGE:
            self.out += b"\x00"
        return len(self.out)

    def finish(self, nodes: list[tuple[int, int, int, int]]) -> bytes:
        nodes = sorted(nodes)
        nbt = [struct.pack("<QQQII", nid, data, sub, parent, 0) for nid, data, sub, parent in nodes]
        nbt_root = self.btree(0x81, nbt, [n[0] for n in nodes], 32)
        blocks = sorted(self.bbt)
        bbt = [struct.pack("<QQHHI", bid, ib, cb, 2, 0) for bid, ib, cb in blocks]
        bbt_root = self.btree(0x80, bbt, [b[0] for b in blocks], 24)
        end = self._align_page()
        if end > AMAP_AT + 496 * 8 * 64:
            raise ValueError("larger than one AMap interval")
        # AMap: one bit per 64 bytes from AMAP_AT on, all of it in use; PMap: all pages in use
        used = (end - AMAP_AT) // 64
        bitmap = bytearray(496)
        for i in range(used):
            bitmap[i // 8] |= 0x80 >> (i % 8)
        self.out[AMAP_AT:AMAP_AT + PAGE] = self._page(bytes(bitmap), 0x84, AMAP_AT, AMAP_AT)
        self.out[PMAP_AT:PMAP_AT + PAGE] = self._page(b"\xff" * 496, 0x83, PMAP_AT, PMAP_AT)
        header = bytearray(564)
        struct.pack_into("<4sIHHHBBII", header, 0, b"!BDN", 0, 0x4D53, 23, 19, 1, 1, 0, 0)
        struct.pack_into("<QQI", header, 24, 0, self.next_bid, 0x100)
        rgnid = [0x400 | t for t in range(32)]  # next free NID index per type (above anything used)
        for t in range(32):
            struct.pack_into("<I", header, 44 + 4 * t, (0x4000 << 5) | t if t else rgnid[t])
        free = (AMAP_AT + 496 * 8 * 64) - end
        struct.pack_into("<IQQQQQQQQBBH", header, 180, 0, end, AMAP_AT, free, 0,
                         nbt_root[0], nbt_root[1], bbt_root[0], bbt_root[1], 2, 0, 0)
        header[256:384] = b"\xff" * 128
        header[384:512] = b"\xff" * 128
        struct.pack_into("<BBH", header, 512, 0x80, 0, 0)
        struct.pack_into("<Q", header, 516, self.next_bid)
        struct.pack_into("<I", header, 4, crc(bytes(header[8:8 + 471])))
        struct.pack_into("<I", header, 524, crc(bytes(header[8:8 + 516])))
        self.out[0:564] = header
        return bytes(self.out)


# ------------------------------------------------------------------------------ messages and folders
@dataclass
class Mail:
    subject: str
    body: str
    sender: str
    to: list[str]
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    attachments: list[tuple[str, bytes]] = field(default_factory=list)
    when: datetime = datetime(2024, 1, 15, 1, 0, tzinfo=UTC)
    transport_headers: str = ""
    message_class: str = "IPM.Note"


ROOT_FOLDER = 0x122
SENT_FOLDER = 0x8022  # index 0x401, normal folder


def _entry_id(nid: int) -> bytes:
    return b"\x00" * 4 + b"\x11" * 16 + struct.pack("<I", nid)


def _message(mail: Mail, nid: int) -> Node:
    props: list[Prop] = [
        (0x001A, PT_STRING, mail.message_class), (0x0037, PT_STRING, mail.subject),
        (0x0039, PT_TIME, filetime(mail.when)), (0x0E06, PT_TIME, filetime(mail.when)),
        (0x0E07, PT_INT32, 1), (0x0E17, PT_INT32, 0), (0x1000, PT_STRING, mail.body),
        (0x0C1A, PT_STRING, mail.sender.split("@")[0]), (0x0C1F, PT_STRING, mail.sender),
        (0x5D01, PT_STRING, mail.sender), (0x0E04, PT_STRING, "; ".join(mail.to)),
        (0x3FFD, PT_INT32, 65001),
    ]
    if mail.transport_headers:
        props.append((0x007D, PT_STRING, mail.transport_headers))
    if mail.attachments:
        props.append((0x0E1B, PT_BOOL, True))
    props.sort()
    recipients = [(1, a) for a in mail.to] + [(2, a) for a in mail.cc] + [(3, a) for a in mail.bcc]
    recip_table = table_context(
        [(0x0C15, PT_INT32), (0x3001, PT_STRING), (0x3002, PT_STRING), (0x3003, PT_STRING), (0x39FE, PT_STRING)],
        [(i, {0x0C15: kind, 0x3001: a.split("@")[0], 0x3002: "SMTP", 0x3003: a, 0x39FE: a})
         for i, (kind, a) in enumerate(recipients)])
    subnodes = [Node(0x692, recip_table)]
    rows = []
    for i, (name, data) in enumerate(mail.attachments):
        anid = ((0x40 + i) << 5) | 0x05
        subnodes.append(Node(anid, property_context(sorted([
            (0x0E20, PT_INT32, len(data)), (0x3701, PT_BINARY, data), (0x3704, PT_STRING, name[:12]),
            (0x3705, PT_INT32, 1), (0x3707, PT_STRING, name), (0x370E, PT_STRING, "application/octet-stream"),
        ]))))
        rows.append((anid, {0x0E20: len(data), 0x3704: name[:12], 0x3705: 1, 0x3707: name}))
    subnodes.append(Node(0x671, table_context(
        [(0x0E20, PT_INT32), (0x3704, PT_STRING), (0x3705, PT_INT32), (0x3707, PT_STRING)], rows)))
    return Node(nid, property_context(props), parent=SENT_FOLDER, subnodes=subnodes)


def _folder_tables(nid: int, sub_folders: list[tuple[int, str, int]], messages: list[tuple[int, Mail]],
                   parent: int) -> list[Node]:
    index = nid >> 5
    hierarchy = table_context([(0x3001, PT_STRING), (0x3602, PT_INT32), (0x3603, PT_INT32), (0x360A, PT_BOOL)],
                              [(fnid, {0x3001: name, 0x3602: count, 0x3603: 0, 0x360A: False})
                               for fnid, name, count in sub_folders])
    contents = table_context([(0x001A, PT_STRING), (0x0037, PT_STRING), (0x0E04, PT_STRING), (0x0E07, PT_INT32)],
                             [(mnid, {0x001A: m.message_class, 0x0037: m.subject, 0x0E04: "; ".join(m.to), 0x0E07: 1})
                              for mnid, m in messages])
    assoc = table_context([(0x001A, PT_STRING)], [])
    return [Node((index << 5) | 0x0D, hierarchy, parent), Node((index << 5) | 0x0E, contents, parent),
            Node((index << 5) | 0x0F, assoc, parent)]


def write_pst(mails: list[Mail], folder: str = "Sent Items") -> bytes:
    w = Writer()
    nodes = []
    store = property_context(sorted([
        (0x0FF9, PT_BINARY, b"\x11" * 16), (0x3001, PT_STRING, "Personal Folders"),
        (0x35E0, PT_BINARY, _entry_id(ROOT_FOLDER)), (0x35E3, PT_BINARY, _entry_id(ROOT_FOLDER)),
        (0x35E7, PT_BINARY, _entry_id(ROOT_FOLDER)),
    ]))
    nodes.append(w.node(Node(0x21, store)))
    # the name-to-id map: one numeric named property (PS_MAPI 0x8501 -> 0x8000), one GUID, one string
    entry = struct.pack("<IHH", 0x8501, 1 << 1, 0)
    nameid = property_context([(0x0001, PT_INT32, 251), (0x0002, PT_BINARY, b"\x22" * 16), (0x0003, PT_BINARY, entry),
                               (0x0004, PT_BINARY, struct.pack("<I", 2) + "a".encode("utf-16-le") + b"\x00\x00")])
    nodes.append(w.node(Node(0x61, nameid)))
    root = property_context(sorted([(0x3001, PT_STRING, ""), (0x3602, PT_INT32, 0), (0x3603, PT_INT32, 0),
                                    (0x360A, PT_BOOL, True)]))
    nodes.append(w.node(Node(ROOT_FOLDER, root, ROOT_FOLDER)))
    for table in _folder_tables(ROOT_FOLDER, [(SENT_FOLDER, folder, len(mails))], [], ROOT_FOLDER):
        nodes.append(w.node(table))
    sent = property_context(sorted([(0x3001, PT_STRING, folder), (0x3602, PT_INT32, len(mails)),
                                    (0x3603, PT_INT32, 0), (0x360A, PT_BOOL, False)]))
    nodes.append(w.node(Node(SENT_FOLDER, sent, ROOT_FOLDER)))
    numbered = [(((0x10000 + i) << 5) | 0x04, m) for i, m in enumerate(mails)]
    for table in _folder_tables(SENT_FOLDER, [], numbered, SENT_FOLDER):
        nodes.append(w.node(table))
    for mnid, mail in numbered:
        nodes.append(w.node(_message(mail, mnid)))
    return w.finish(nodes)
