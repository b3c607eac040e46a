"""platform-hostdev: device-tree platform-device passthrough for libvirt."""
from setuptools import find_packages, setup

setup(
    name="platform-hostdev",
    version="0.1.0",
    description="Device-tree platform/AMBA device passthrough (vfio-platform) for libvirt",
    python_requires=">=3.11",
    package_dir={
        "": "plugin",
        # The RelaxNG schemas live at the top of the tree and ship inside the package.
        "platform_hostdev.xml_schemas": "xml_schemas",
        # The hook executables too: 'platform-hostdev hook install' copies them.
        "platform_hostdev.hookfiles": "hooks",
    },
    packages=[*find_packages("plugin"), "platform_hostdev.xml_schemas",
              "platform_hostdev.hookfiles"],
    package_data={"platform_hostdev.xml_schemas": ["*.rng"],
                  "platform_hostdev.hookfiles": ["qemu.d/*", "vdsm/*/*"]},
    install_requires=["lxml", "pyudev", "libvirt-python"],
    extras_require={
        "test": ["pytest", "pytest-mock", "hypothesis", "pdoc"],
        "lint": ["ruff", "mypy", "lxml-stubs", "types-setuptools", "pdoc"],
    },
    entry_points={"console_scripts": ["platform-hostdev=platform_hostdev.cli.main:main"]},
)
