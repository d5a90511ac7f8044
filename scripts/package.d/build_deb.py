#!/usr/bin/env python3
"""scripts/package.d/build_deb.py — builds the .deb from Cargo.toml's [package.metadata.deb] with dpkg-deb.

    python3 scripts/package.d/build_deb.py ROOT      (prints the package's path)

It reads the same metadata cargo-deb reads (maintainer, section, priority, depends = "$auto",
extended-description, assets: [source, destination, mode]; a destination ending in "/" is a
directory), stages the assets under ROOT/target/debian/stage, writes DEBIAN/control and DEBIAN/md5sums,
and runs `dpkg-deb --root-owner-group --build`. dpkg-deb is part of every Debian system, while cargo-deb
is a crates.io download that an offline build machine (such as CI's) cannot make.

"$auto" depends: the Debian package owning each shared library the launcher links (ldd, dpkg -S), and for
libc6 the newest GLIBC_x.y symbol version the binary asks for, as dpkg-shlibdeps would give.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib


def fail(message):
    sys.exit(f"scripts/package: error: {message}")


def run(*argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def glibc_version(binary):
    with open(binary, "rb") as f:
        found = re.findall(rb"GLIBC_(\d+)\.(\d+)", f.read())
    if not found:
        return None
    major, minor = max((int(a), int(b)) for a, b in found)
    return f"{major}.{minor}"


def auto_depends(binary):
    packages = {}
    for line in run("ldd", binary).splitlines():
        match = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)", line)
        if not match or "ld-linux" in match.group(1) or "vdso" in match.group(1):
            continue
        library = os.path.realpath(match.group(1))
        owners = subprocess.run(["dpkg", "-S", library], capture_output=True, text=True)
        if owners.returncode != 0:  # usrmerge: dpkg knows /lib/..., ldd says /usr/lib/...
            owners = subprocess.run(["dpkg", "-S", library.removeprefix("/usr")],
                                    capture_output=True, text=True)
        if owners.returncode != 0:
            fail(f"no Debian package owns {library}, which {binary} links; install it with apt-get")
        packages[owners.stdout.split(":")[0].strip()] = None
    if "libc6" in packages:
        packages["libc6"] = glibc_version(binary)
    return ", ".join(f"{p} (>= {v})" if v else p for p, v in sorted(packages.items()))


def stage_assets(root, assets, stage):
    installed = []
    for source, destination, mode in assets:
        source_path = os.path.join(root, source)
        if not os.path.isfile(source_path):
            fail(f"{source} (an asset in Cargo.toml's [package.metadata.deb]) does not exist; build it first")
        if destination.endswith("/"):
            destination += os.path.basename(source)
        target = os.path.join(stage, destination)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source_path, target)
        os.chmod(target, int(mode, 8))
        installed.append(destination)
    return installed


def md5sums(stage, installed):
    lines = []
    for path in sorted(installed):
        with open(os.path.join(stage, path), "rb") as f:
            lines.append(f"{hashlib.md5(f.read()).hexdigest()}  {path}\n")
    return "".join(lines)


def installed_size_kib(stage, installed):
    return sum(os.path.getsize(os.path.join(stage, p)) for p in installed) // 1024 + 1


def main():
    if len(sys.argv) != 2:
        fail("usage: build_deb.py ROOT")
    root = sys.argv[1]
    with open(os.path.join(root, "Cargo.toml"), "rb") as f:
        manifest = tomllib.load(f)
    package = manifest["package"]
    deb = package["metadata"]["deb"]
    name, version = package["name"], package["version"]
    arch = run("dpkg", "--print-architecture").strip()

    out_dir = os.path.join(root, "target", "debian")
    stage = os.path.join(out_dir, "stage")
    shutil.rmtree(stage, ignore_errors=True)
    installed = stage_assets(root, deb["assets"], stage)
    binary = os.path.join(stage, "usr", "bin", name)
    depends = deb.get("depends", "$auto").replace("$auto", auto_depends(binary))

    control_dir = os.path.join(stage, "DEBIAN")
    os.makedirs(control_dir)
    description = deb.get("extended-description", "")
    control = (
        f"Package: {name}\nVersion: {version}-1\nArchitecture: {arch}\n"
        f"Maintainer: {deb['maintainer']}\nInstalled-Size: {installed_size_kib(stage, installed)}\n"
        f"Depends: {depends}\nSection: {deb.get('section', 'misc')}\n"
        f"Priority: {deb.get('priority', 'optional')}\n"
        f"Description: {package['description']}\n {description}\n"
    )
    with open(os.path.join(control_dir, "control"), "w") as f:
        f.write(control)
    with open(os.path.join(control_dir, "md5sums"), "w") as f:
        f.write(md5sums(stage, installed))

    path = os.path.join(out_dir, f"{name}_{version}-1_{arch}.deb")
    run("dpkg-deb", "--root-owner-group", "-Zxz", "--build", stage, path)
    shutil.rmtree(stage)
    print(path)


if __name__ == "__main__":
    main()
