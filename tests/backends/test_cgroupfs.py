# ruff: noqa: E501 - canned kernel text stays verbatim
"""The cgroup parsers on canned kernel text: /proc/self/mountinfo of real machine
types, /proc/self/cgroup, memory.events, memory.oom_control, cpu.max; and where
cgroup2 runs go (plan_placement)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seqbox.backends.cgroup import fs as cgroupfs
from seqbox.backends.cgroup.v1 import Cgroup1Layout
from seqbox.backends.cgroup.v2 import plan_placement

# This machine: cgroup v1 controllers each on its own mount, cgroup2 (hugetlb only)
# at /sys/fs/cgroup/unified, no systemd.
HYBRID_PLAIN = """\
22 1 253:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

# Ubuntu 20.04 with systemd's hybrid layout: optional fields, co-mounted cpu,cpuacct,
# a read-only tmpfs above read-write cgroup mounts.
HYBRID_SYSTEMD = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
39 33 0:34 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
40 33 0:35 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
41 33 0:36 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,pids
42 33 0:37 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:19 master:3 - cgroup cgroup rw,freezer
"""

HYBRID_SYSTEMD_SELF = """\
12:pids:/user.slice/user-1000.slice/session-2.scope
11:memory:/user.slice/user-1000.slice/session-2.scope
7:freezer:/
5:cpu,cpuacct:/user.slice
1:name=systemd:/user.slice/user-1000.slice/session-2.scope
0::/user.slice/user-1000.slice/session-2.scope
"""

# Fedora / Ubuntu 22.04+: the unified hierarchy only.
PURE_V2 = """\
24 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw,seclabel
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,seclabel,nsdelegate,memory_recursiveprot
"""

# A docker container (cgroup namespace): cgroup2 mounted read-only.
DOCKER_RO_V2 = """\
473 387 0:143 / / rw,relatime master:181 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/A:/var/lib/docker/overlay2/l/B
477 473 0:149 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
486 477 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw
"""

# A docker container on a v1 host without a cgroup namespace: the mount's root is
# the container's cgroup, and /proc/self/cgroup shows the same path.
DOCKER_V1 = """\
396 394 0:21 /kubepods/besteffort/pod9a18/d28e0087 /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
397 394 0:22 /kubepods/besteffort/pod9a18/d28e0087 /sys/fs/cgroup/pids ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,pids
"""
DOCKER_V1_SELF = """\
5:pids:/kubepods/besteffort/pod9a18/d28e0087
4:memory:/kubepods/besteffort/pod9a18/d28e0087
"""


def _by_path(text: str) -> dict[str, cgroupfs.Mount]:
    return {mount.path: mount for mount in cgroupfs.parse_mountinfo(text)}


def test_mountinfo_hybrid_plain() -> None:
    mounts = _by_path(HYBRID_PLAIN)
    assert set(mounts) == {
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/cpuacct",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/freezer",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/systemd",
        "/sys/fs/cgroup/unified",
    }  # ext4 and the tmpfs are not cgroups
    assert mounts["/sys/fs/cgroup/memory"].fstype == "cgroup"
    assert mounts["/sys/fs/cgroup/memory"].controllers == {"memory"}
    assert mounts["/sys/fs/cgroup/systemd"].controllers == frozenset()  # name=systemd
    assert mounts["/sys/fs/cgroup/unified"].fstype == "cgroup2"
    assert not any(mount.read_only for mount in mounts.values())
    assert all(mount.root == "/" for mount in mounts.values())


def test_mountinfo_hybrid_systemd() -> None:
    mounts = _by_path(HYBRID_SYSTEMD)
    assert mounts["/sys/fs/cgroup/cpu,cpuacct"].controllers == {"cpu", "cpuacct"}
    assert mounts["/sys/fs/cgroup/freezer"].controllers == {"freezer"}  # two optional fields
    assert mounts["/sys/fs/cgroup/unified"].fstype == "cgroup2"
    assert not mounts["/sys/fs/cgroup/memory"].read_only  # the ro tmpfs above does not count
    assert "/sys/fs/cgroup" not in mounts


def test_mountinfo_pure_v2() -> None:
    mounts = cgroupfs.parse_mountinfo(PURE_V2)
    assert len(mounts) == 1
    (mount,) = mounts
    assert (mount.path, mount.root, mount.fstype, mount.read_only) == (
        "/sys/fs/cgroup",
        "/",
        "cgroup2",
        False,
    )
    assert mount.controllers == frozenset()  # memory_recursiveprot is an option, not a controller


def test_mountinfo_docker_read_only_cgroup2() -> None:
    (mount,) = cgroupfs.parse_mountinfo(DOCKER_RO_V2)
    assert mount.path == "/sys/fs/cgroup"
    assert mount.fstype == "cgroup2"
    assert mount.read_only  # ro in the mount options, rw in the super options


@pytest.mark.parametrize(
    ("escaped", "path"),
    [
        (r"/mnt/my\040cgroup", "/mnt/my cgroup"),
        (r"/mnt/tab\011here", "/mnt/tab\there"),
        (r"/mnt/back\134slash", "/mnt/back\\slash"),
        (r"/mnt/end\040", "/mnt/end "),
        (r"/mnt/two\040\040spaces", "/mnt/two  spaces"),
    ],
)
def test_mountinfo_unescapes_paths(escaped: str, path: str) -> None:
    text = f"50 33 0:40 / {escaped} rw,relatime - cgroup2 none rw\n"
    (mount,) = cgroupfs.parse_mountinfo(text)
    assert mount.path == path


def test_mountinfo_unescapes_root() -> None:
    text = "50 33 0:40 /my\\040slice /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n"
    (mount,) = cgroupfs.parse_mountinfo(text)
    assert mount.root == "/my slice"


def test_mountinfo_with_paths_in_any_encoding_is_read(tmp_path: Path) -> None:
    """A USB stick mounted at /media/me/Données (or at a name in no encoding)
    shows in every process's mountinfo: the cgroup mounts are still found, and
    a path comes back as the bytes the kernel gave (os.fsencode)."""
    lines = [
        "22 1 253:0 / / rw,relatime - ext4 /dev/vda rw",
        "60 22 8:1 / /media/me/Donn\xc3\xa9es rw,relatime - vfat /dev/sdb1 rw",
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
        "41 31 0:38 / /mnt/\xffcg rw,relatime - cgroup2 cgroup2 rw",
    ]
    path = tmp_path / "mountinfo"
    path.write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    memory, unified = cgroupfs.parse_mountinfo(cgroupfs.read(str(path)))
    assert memory.path == "/sys/fs/cgroup/memory"
    assert os.fsencode(unified.path) == b"/mnt/\xffcg"
    assert cgroupfs.try_read(str(path)) == cgroupfs.read(str(path))


def test_mountinfo_ignores_garbage() -> None:
    assert cgroupfs.parse_mountinfo("") == []
    assert cgroupfs.parse_mountinfo("not a mountinfo line\n\n") == []


def test_proc_cgroup_v1_only() -> None:
    text = """\
9:name=systemd:/
8:pids:/
4:memory:/process_api/adf8a4c7
2:cpuacct:/
0::/
"""
    paths = cgroupfs.parse_proc_cgroup(text)
    assert paths["memory"] == "/process_api/adf8a4c7"
    assert paths["pids"] == "/"
    assert paths["name=systemd"] == "/"
    assert paths[cgroupfs.UNIFIED] == "/"


def test_proc_cgroup_hybrid() -> None:
    paths = cgroupfs.parse_proc_cgroup(HYBRID_SYSTEMD_SELF)
    assert paths["cpu"] == paths["cpuacct"] == "/user.slice"
    assert paths["memory"] == "/user.slice/user-1000.slice/session-2.scope"
    assert paths[cgroupfs.UNIFIED] == "/user.slice/user-1000.slice/session-2.scope"
    assert paths["freezer"] == "/"


def test_proc_cgroup_v2() -> None:
    text = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope\n"
    assert cgroupfs.parse_proc_cgroup(text) == {
        cgroupfs.UNIFIED: "/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope"
    }


def test_proc_cgroup_path_with_colon() -> None:
    assert cgroupfs.parse_proc_cgroup("0::/system.slice/docker-ab:cd.scope\n") == {
        cgroupfs.UNIFIED: "/system.slice/docker-ab:cd.scope"
    }


def test_memory_events_v2() -> None:
    text = "low 0\nhigh 12\nmax 340\noom 3\noom_kill 2\noom_group_kill 1\n"
    assert cgroupfs.parse_flat_keyed(text) == {
        "low": 0,
        "high": 12,
        "max": 340,
        "oom": 3,
        "oom_kill": 2,
        "oom_group_kill": 1,
    }


def test_memory_oom_control_v1() -> None:
    text = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"
    values = cgroupfs.parse_flat_keyed(text)
    assert values["oom_kill"] == 1
    assert values["under_oom"] == 0


def test_cgroup_events_and_large_values() -> None:
    assert cgroupfs.parse_flat_keyed("populated 0\nfrozen 1\n") == {"populated": 0, "frozen": 1}
    stat = cgroupfs.parse_flat_keyed("cache 0\nhierarchical_memory_limit 9223372036854771712\n")
    assert stat["hierarchical_memory_limit"] == 9223372036854771712


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max 100000\n", (None, 100000)),
        ("150000 100000\n", (150000, 100000)),
        ("50000 1000000", (50000, 1000000)),
    ],
)
def test_cpu_max(text: str, expected: tuple[int | None, int]) -> None:
    assert cgroupfs.parse_cpu_max(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("max\n", None), ("268435456\n", 268435456), ("0\n", 0), ("9223372036854771712\n", None), ("", None)],
)
def test_limit_files(text: str, expected: int | None) -> None:
    assert cgroupfs.parse_limit(text) == expected


def test_procs_file() -> None:
    assert cgroupfs.parse_pids("12\n345\n6789\n") == [12, 345, 6789]
    assert cgroupfs.parse_pids("") == []


def test_host_path() -> None:
    memory = _by_path(HYBRID_PLAIN)["/sys/fs/cgroup/memory"]
    assert cgroupfs.host_path(memory, "/process_api/x") == "/sys/fs/cgroup/memory/process_api/x"
    assert cgroupfs.host_path(memory, "/") == "/sys/fs/cgroup/memory"
    (v2,) = cgroupfs.parse_mountinfo(PURE_V2)
    assert cgroupfs.host_path(v2, "/user.slice/a.scope") == "/sys/fs/cgroup/user.slice/a.scope"
    docker = _by_path(DOCKER_V1)["/sys/fs/cgroup/memory"]
    assert cgroupfs.host_path(docker, "/kubepods/besteffort/pod9a18/d28e0087") == "/sys/fs/cgroup/memory"


def test_cgroup1_layout_hybrid_systemd() -> None:
    layout = Cgroup1Layout(
        cgroupfs.parse_mountinfo(HYBRID_SYSTEMD), cgroupfs.parse_proc_cgroup(HYBRID_SYSTEMD_SELF)
    )
    assert layout.dirs["memory"] == "/sys/fs/cgroup/memory/user.slice/user-1000.slice/session-2.scope"
    assert layout.dirs["cpu"] == layout.dirs["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/user.slice"
    assert layout.dirs["freezer"] == "/sys/fs/cgroup/freezer"
    assert layout.dirs["unified"] == "/sys/fs/cgroup/unified/user.slice/user-1000.slice/session-2.scope"
    assert not layout.read_only


def test_cgroup1_layout_read_only_container() -> None:
    layout = Cgroup1Layout(cgroupfs.parse_mountinfo(DOCKER_V1), cgroupfs.parse_proc_cgroup(DOCKER_V1_SELF))
    assert layout.dirs["memory"] == "/sys/fs/cgroup/memory"
    assert "memory" in layout.read_only
    assert not layout.usable("memory")


def test_cgroup1_layout_pure_v2_has_no_memory() -> None:
    layout = Cgroup1Layout(cgroupfs.parse_mountinfo(PURE_V2), {cgroupfs.UNIFIED: "/a"})
    assert "memory" not in layout.dirs
    assert not layout.usable("memory")


# -- plan_placement ---------------------------------------------------------------

MOUNT = "/sys/fs/cgroup"
ME = 4242


def test_placement_root() -> None:
    placement = plan_placement(MOUNT, MOUNT, [1, 2, ME], ME, {MOUNT: True})
    assert (placement.kind, placement.base) == ("root", MOUNT)
    assert plan_placement(MOUNT + "/", MOUNT, [1, ME], ME, {MOUNT: True}).kind == "root"


def test_placement_root_not_writable() -> None:
    placement = plan_placement(MOUNT, MOUNT, [1, 2, ME], ME, {MOUNT: False})
    assert placement.base is None


def test_placement_nested() -> None:
    node = f"{MOUNT}/user.slice/seqbox-20260101T000000-77"
    placement = plan_placement(MOUNT, f"{node}/cmd", [ME, 78], ME, {})
    assert (placement.kind, placement.base) == ("nested", node)


def test_placement_alone_moves_into_leaf() -> None:
    scope = f"{MOUNT}/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope"
    placement = plan_placement(MOUNT, scope, [ME], ME, {scope: True})
    assert (placement.kind, placement.base) == ("leaf", scope)


def test_placement_already_in_own_leaf() -> None:
    scope = f"{MOUNT}/ci.scope"
    placement = plan_placement(MOUNT, f"{scope}/seqbox-sup-{ME}", [ME], ME, {})
    assert (placement.kind, placement.base) == ("leaf", scope)


def test_placement_shared_goes_beside() -> None:
    scope = f"{MOUNT}/ci/step.scope"
    placement = plan_placement(MOUNT, scope, [ME, 100, 101], ME, {scope: True, f"{MOUNT}/ci": True})
    assert (placement.kind, placement.base) == ("sibling", f"{MOUNT}/ci")


def test_placement_nothing_writable() -> None:
    scope = f"{MOUNT}/user.slice/user-1000.slice/session-2.scope"
    placement = plan_placement(
        MOUNT, scope, [ME, 100], ME, {scope: False, f"{MOUNT}/user.slice/user-1000.slice": False}
    )
    assert (placement.kind, placement.base) == ("none", None)
    assert scope in placement.reason


def test_placement_alone_but_not_writable() -> None:
    scope = f"{MOUNT}/a/b.scope"
    placement = plan_placement(MOUNT, scope, [ME], ME, {scope: False, f"{MOUNT}/a": False})
    assert placement.base is None
