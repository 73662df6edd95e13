"""Shrinker owners: read in the kernel what each struct shrinker * shrinks.

A shrinker is known to the tracepoints only by its pointer (``shr``) and
its ``scan_objects`` callback (``shrink``); ``super_cache_scan`` alone
shrinks every mounted filesystem.  The kernel knows more: a shrinker's
owner is a ``super_block`` (``s_type->name``, ``s_id``, ``s_dev``), an
``ext4_sb_info`` (its ``s_sb``), a ``zs_pool`` (``name``, e.g. ``zram1``),
a ``journal_t`` (``j_devname``, e.g. ``vda-8``).  ``bpf/slab.bpf.c`` reads
that once per new ``shr`` into ``slab_shrinker_owners``; this module gives
it what it needs (callback addresses from kallsyms, struct offsets and
layouts from the running kernel's BTF, as cflags) and decodes the map.
Other shrinkers (``kfree_rcu_shrink_scan``, ``deferred_split_scan``,
``scan_shadow_nodes``, ``mb_cache_scan``, ...) are global or own nothing
with a name: they stay function-only, unless the kernel has
CONFIG_SHRINKER_DEBUG, whose ``shrinker->name`` is read for every shrinker.

Limits: callbacks in modules loaded after the program was compiled are not
recognised (their shrinkers stay function-only), nor are owners whose
structs are not in vmlinux BTF (a filesystem built as a module).  A
``shr`` freed and reused by another owner during one trace keeps the name
first read (the report keys shrinkers by ``shr`` anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from trace_reclaim import abi
from trace_reclaim.btf import BTF

__all__ = ["Recipe", "RECIPES", "owner_cflags", "read_owners", "decode_owner"]

SHRINKER_OWNER_SUPER = abi.value("SHRINKER_OWNER_SUPER")
SHRINKER_OWNER_ZS_POOL = abi.value("SHRINKER_OWNER_ZS_POOL")
SHRINKER_OWNER_JOURNAL = abi.value("SHRINKER_OWNER_JOURNAL")
# Kernel dev_t: MINORBITS 20 (include/linux/kdev_t.h), unlike user space's.
MINORBITS = 20


@dataclass(frozen=True)
class Recipe:
    """One owner the kernel lets us name: its callback and where the names are."""

    callback: str            # the scan_objects function
    macro: str               # -D<macro>=<callback address>
    owner: str               # the struct the shrinker belongs to
    shrinker_member: str     # its struct shrinker (embedded) or struct shrinker * member
    embed_macro: str         # -D<embed_macro>=offset if embedded, -1 if a pointer
    # (member, -D macro) of owner fields bpf/slab.bpf.c reads
    fields: Tuple[Tuple[str, str], ...]
    needs_super: bool        # names itself through a struct super_block


# Each owner switched from an embedded struct shrinker to a pointer in
# Linux 6.7 (the series of c42d50aefd17): "fs: super: dynamically allocate
# the s_shrink", "ext4: dynamically allocate the ext4-es shrinker",
# "zsmalloc: dynamically allocate the mm-zspool shrinker", "jbd2,ext4:
# dynamically allocate the jbd2-journal shrinker".  BTF says which layout
# this kernel has; see owner_cflags().
RECIPES: Tuple[Recipe, ...] = (
    Recipe("super_cache_scan", "SUPER_CACHE_SCAN", "super_block", "s_shrink",
           "SB_SHRINK_EMBED_OFF", (), True),
    Recipe("ext4_es_scan", "EXT4_ES_SCAN", "ext4_sb_info", "s_es_shrinker",
           "EXT4_ES_EMBED_OFF", (("s_sb", "EXT4_SBI_SB_OFF"),), True),
    Recipe("zs_shrinker_scan", "ZS_SHRINKER_SCAN", "zs_pool", "shrinker",
           "ZS_POOL_EMBED_OFF", (("name", "ZS_POOL_NAME_OFF"),), False),
    Recipe("jbd2_journal_shrink_scan", "JBD2_SHRINK_SCAN", "journal_s", "j_shrinker",
           "JBD2_EMBED_OFF", (("j_devname", "JBD2_DEVNAME_OFF"),), False),
)

# What names a super_block: (struct, member, -D macro).
SUPER_FIELDS = (("super_block", "s_type", "SB_S_TYPE_OFF"),
                ("super_block", "s_id", "SB_S_ID_OFF"),
                ("super_block", "s_dev", "SB_S_DEV_OFF"),
                ("file_system_type", "name", "FS_TYPE_NAME_OFF"))


def owner_cflags(btf: Optional[BTF], kernel_symbol: Callable[[str], Optional[int]],
                 ) -> Tuple[List[str], List[str], List[Tuple[str, str]]]:
    """cflags for SHRINKER_OWNERS: (cflags, callbacks named, [(callback, why not)]).

    No cflags at all when nothing can be named (no BTF, no known layout).
    """
    if btf is None:
        return [], [], [("shrinker owners", "no kernel BTF")]
    cflags: List[str] = []
    private = btf.member("shrinker", "private_data")
    if private is not None:
        cflags.append(f"-DSHRINKER_PRIVATE_DATA_OFF={private[0]}")
    debug_name = btf.member("shrinker", "name")
    if debug_name is not None and debug_name[1].endswith("*"):
        cflags.append(f"-DSHRINKER_NAME_OFF={debug_name[0]}")
    super_flags: Optional[List[str]] = []
    for struct, member, macro in SUPER_FIELDS:
        m = btf.member(struct, member)
        if m is None or super_flags is None:
            super_flags = None
            continue
        super_flags.append(f"-D{macro}={m[0]}")
    named: List[str] = []
    skipped: List[Tuple[str, str]] = []
    for r in RECIPES:
        why = _recipe(btf, r, private is not None, super_flags is not None, kernel_symbol,
                      cflags)
        if why:
            skipped.append((r.callback, why))
        else:
            named.append(r.callback)
    if any(r.needs_super and r.callback in named for r in RECIPES):
        cflags += super_flags or []
    if not named and debug_name is None:
        return [], [], skipped
    return ["-DSHRINKER_OWNERS"] + cflags, named, skipped


def _recipe(btf: BTF, r: Recipe, has_private: bool, has_super: bool,
            kernel_symbol: Callable[[str], Optional[int]], cflags: List[str]) -> str:
    """Add one recipe's cflags; return why it cannot be used ('' when it can)."""
    m = btf.member(r.owner, r.shrinker_member)
    if m is None:
        return f"no {r.owner}.{r.shrinker_member} in BTF"
    off, ctype = m
    if ctype == "struct shrinker *":
        if not has_private:
            return "shrinker allocated apart but no shrinker.private_data in BTF"
        embed = -1
    elif ctype == "struct shrinker":
        embed = off   # before 6.7: the owner is container_of() the shrinker
    else:
        return f"{r.owner}.{r.shrinker_member} is {ctype}"
    if r.needs_super and not has_super:
        return "super_block names (s_type, s_id, s_dev) not in BTF"
    fields = []
    for member, macro in r.fields:
        f = btf.member(r.owner, member)
        if f is None:
            return f"no {r.owner}.{member} in BTF"
        fields.append(f"-D{macro}={f[0]}")
    addr = kernel_symbol(r.callback)
    if not addr:
        return f"{r.callback} not in kallsyms"
    cflags += [f"-D{r.macro}=0x{addr:x}ULL", f"-D{r.embed_macro}={embed}"] + fields
    return ""


def _cstr(raw: Any) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode("utf-8", "replace")


def decode_owner(kind: int, s_dev: int, name: str, fs_type: str, ident: str,
                 ) -> Dict[str, str]:
    """What the kernel said about one shrinker, as the recording keeps it."""
    d: Dict[str, str] = {}
    if name:
        d["name"] = name
    if kind == SHRINKER_OWNER_SUPER:
        d["fs_type"] = fs_type
        d["s_id"] = ident
        d["s_dev"] = f"{s_dev >> MINORBITS}:{s_dev & ((1 << MINORBITS) - 1)}"
    elif kind == SHRINKER_OWNER_ZS_POOL and ident:
        d["zs_pool"] = ident
    elif kind == SHRINKER_OWNER_JOURNAL and ident:
        d["journal"] = ident
    return d


def read_owners(bpf: Any, sent: Set[int], limit: int) -> Optional[Dict[str, Dict[str, str]]]:
    """Owners of shrinkers not sent yet, by ``shr`` in hex; None without the map."""
    try:
        table = bpf["slab_shrinker_owners"]
    except KeyError:
        return None
    out: Dict[str, Dict[str, str]] = {}
    for k, v in table.items():
        if k.value in sent or len(sent) >= limit:
            continue
        sent.add(k.value)
        out[f"{k.value:x}"] = decode_owner(v.kind, v.s_dev, _cstr(v.name), _cstr(v.fs_type),
                                           _cstr(v.id))
    return out
