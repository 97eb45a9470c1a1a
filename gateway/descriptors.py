"""Descriptor sources of the gateway: the envios protos or any ``FileDescriptorSet`` file.

A descriptor set file is what ``protoc --include_imports --descriptor_set_out=FILE`` or
``buf build -o FILE`` writes, the same input Envoy's ``grpc_json_transcoder`` takes. Its
files go into a private ``DescriptorPool``, so the gateway needs no generated Python code
for the services it serves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError


class DescriptorSetError(ValueError):
    """Raised when a descriptor set file cannot be read or its files do not link."""


@dataclass(frozen=True)
class DescriptorSource:
    """The files of one descriptor pool whose services the gateway may serve."""

    pool: descriptor_pool.DescriptorPool
    files: tuple[FileDescriptor, ...]

    def services(self, names: Sequence[str] = ()) -> list[ServiceDescriptor]:
        """Return the services of the files, only those named in ``names`` when it is not empty.

        Raises:
            DescriptorSetError: a name in ``names`` is not a service of these files.
        """
        found = [s for f in self.files for s in f.services_by_name.values()]
        if not names:
            return found
        by_name = {s.full_name: s for s in found}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise DescriptorSetError(
                f"services not found in the descriptor set: {', '.join(missing)}; "
                f"it has {', '.join(sorted(by_name)) or 'no services'}"
            )
        return [by_name[n] for n in names]


def read_descriptor_set(path: Path) -> DescriptorSource:
    """Load a binary ``FileDescriptorSet`` file into a new pool.

    Raises:
        DescriptorSetError: the file is missing, does not parse, or a file in it imports
            one that the set does not contain (build it with ``--include_imports``).
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DescriptorSetError(f"cannot read descriptor set {path}: {error}") from None
    file_set = descriptor_pb2.FileDescriptorSet()
    try:
        file_set.ParseFromString(data)
    except DecodeError as error:
        raise DescriptorSetError(f"{path} is not a FileDescriptorSet: {error}") from None
    return pool_from_files(file_set.file, origin=str(path))


def pool_from_files(
    files: Iterable[descriptor_pb2.FileDescriptorProto], origin: str
) -> DescriptorSource:
    """Add ``files`` to a new pool in dependency order and return them as a source."""
    protos = {f.name: f for f in files}
    pool = descriptor_pool.DescriptorPool()
    for name in _dependency_order(protos, origin):
        try:
            pool.Add(protos[name])
        except (TypeError, ValueError) as error:
            raise DescriptorSetError(f"{origin}: cannot load {name}: {error}") from None
    loaded = tuple(pool.FindFileByName(name) for name in protos)
    return DescriptorSource(pool, loaded)


def _dependency_order(
    protos: dict[str, descriptor_pb2.FileDescriptorProto], origin: str
) -> list[str]:
    ordered: list[str] = []
    seen: set[str] = set()

    def visit(name: str, importer: str) -> None:
        if name in seen:
            return
        if name not in protos:
            raise DescriptorSetError(
                f"{origin}: {importer} imports {name}, which the descriptor set does not "
                "contain; build it with --include_imports"
            )
        seen.add(name)
        for dependency in protos[name].dependency:
            visit(dependency, name)
        ordered.append(name)

    for name in protos:
        visit(name, name)
    return ordered


def default_source(packages: Sequence[str]) -> DescriptorSource:
    """Return the files of the generated modules below the Python ``packages``.

    Importing a generated ``*_pb2`` module registers its file in the default pool.

    Raises:
        ImportError: a package or one of its modules cannot be imported.
    """
    from gateway.bindings import import_generated_modules

    files: list[FileDescriptor] = []
    for package in packages:
        for module in import_generated_modules(package):
            descriptor = getattr(module, "DESCRIPTOR", None)
            if isinstance(descriptor, FileDescriptor):
                files.append(descriptor)
    return DescriptorSource(descriptor_pool.Default(), tuple(files))
