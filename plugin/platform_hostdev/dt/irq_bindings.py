"""How each interrupt controller's specifier reads: one data table keyed by compatible.

A specifier means what the controller's binding says and what its driver's
``xlate``/``translate`` does with it (include/linux/irqdomain.h: the domain
op returns the hwirq and the IRQ_TYPE_* the kernel records for the line).
Nothing is assumed from the cell count: a controller whose binding is not in
:data:`BINDINGS` is *unknown* and its specifiers are not decoded.

Decoders:

* ``gic``: ARM GIC ``<type number flags [partition]>``: type 0 SPI, 1 PPI and,
  on GICv3 only, 2 ESPI, 3 EPPI; flags bits 3:0 the IRQ_TYPE (bits 15:8 a
  GICv2 PPI CPU mask); GICv3's optional 4th cell is a phandle to a
  ``ppi-partitions`` child, 0 when not partitioned
  (Documentation/devicetree/bindings/interrupt-controller/arm,gic.yaml,
  arm,gic-v3.yaml; drivers/irqchip/irq-gic.c gic_irq_domain_translate,
  irq-gic-v3.c gic_irq_domain_translate);
* ``gic-spi``: a controller stacked on the GIC that takes the GIC's own SPI
  specifier ``<0 number flags>`` and hands it on (cell 0 must be GIC_SPI);
* ``cells``: named cells, the IRQ_TYPE in ``flags_cell`` (absent: the kernel
  records IRQ_TYPE_NONE), or taken from a controller property;
* ``unknown``: listed because Debian's DTBs have it, not decoded.

``line`` is the line's signalling when the specifier carries no type (the
flow handler the driver installs), and ``untyped`` says the kernel never
records a trigger type for such a line (its irq_chip has no irq_set_type):
vfio-platform then sees no level type (drivers/vfio/platform/
vfio_platform_irq.c vfio_platform_irq_init tests irq_get_trigger_type()) and
offers the line as an edge, EVENTFD only.
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "Binding", "BINDINGS", "SUBNODE_BINDINGS", "UNMODELLED", "UNKNOWN", "binding_for",
    "IRQ_TYPE_SENSE_MASK", "IRQ_TYPE_LEVEL_MASK", "IRQ_TYPE_EDGE_BOTH",
]

# include/linux/irq.h
IRQ_TYPE_SENSE_MASK = 0x0000000F
IRQ_TYPE_EDGE_BOTH = 0x3
IRQ_TYPE_LEVEL_MASK = 0xC

_GIC = "arm,gic.yaml; drivers/irqchip/irq-gic.c gic_irq_domain_translate"
_GIC_V3 = "arm,gic-v3.yaml; drivers/irqchip/irq-gic-v3.c gic_irq_domain_translate"
_GPIOLIB = ("drivers/gpio/gpiolib.c gpiochip_domain_ops (irq_domain_xlate_twocell) of the "
            "driver's gpiolib irqchip")


class Binding(NamedTuple):
    """One controller binding: how its specifier cells read (see the module docstring)."""

    decoder: str                       # "gic", "gic-spi", "cells", "unknown"
    cells: tuple[int, ...]             # the #interrupt-cells values the binding allows
    source: str                        # the kernel binding / driver it is read from
    names: tuple[str, ...] = ("hwirq",)  # what the non-flag cells are (for the LINE column)
    flags_cell: int | None = None      # index of the IRQ_TYPE cell
    type_property: str | None = None   # controller property holding the IRQ_TYPE instead
    line: str | None = None            # "level"/"edge" when the specifier carries no type
    untyped: bool = False              # the kernel can never record a type for the line
    extended: bool = False             # GICv3: ESPI/EPPI types and the 4th cell
    per_cpu: bool = False              # per-CPU lines (no guest can take them)
    key: str = ""                      # filled by binding_for: the compatible that chose it

    @property
    def known(self) -> bool:
        return self.decoder != "unknown"


def _gic(source: str = _GIC) -> Binding:
    return Binding("gic", (3,), source)


def _gic_spi(source: str) -> Binding:
    return Binding("gic-spi", (3,), source)


def _twocell(source: str, names: tuple[str, ...] = ("hwirq",)) -> Binding:
    return Binding("cells", (2,), source, names=names, flags_cell=1)


#: compatible -> binding. A controller is looked up by its compatibles in order.
BINDINGS: dict[str, Binding] = {
    # the GICv1/v2 family: arm,gic.yaml's compatible list, #interrupt-cells = <3>
    **{c: _gic() for c in (
        "arm,arm11mp-gic", "arm,cortex-a15-gic", "arm,cortex-a7-gic", "arm,cortex-a5-gic",
        "arm,cortex-a9-gic", "arm,eb11mp-gic", "arm,gic-400", "arm,pl390", "arm,tc11mp-gic",
        "qcom,msm-8660-qgic", "qcom,msm-qgic2", "nvidia,tegra210-agic",
        "arm,arm1176jzf-devchip-gic", "arm,gic-v2")},
    "arm,gic-v3": Binding("gic", (3, 4), _GIC_V3, extended=True),
    # stacked on the GIC, taking its SPI specifier
    "allwinner,sun6i-a31-r-intc": _gic_spi(
        "allwinner,sun6i-a31-r-intc.yaml; drivers/irqchip/irq-sun6i-r.c "
        "sun6i_r_intc_domain_translate"),
    "allwinner,sun50i-h6-r-intc": _gic_spi(
        "allwinner,sun6i-a31-r-intc.yaml; drivers/irqchip/irq-sun6i-r.c "
        "sun6i_r_intc_domain_translate"),
    "mediatek,mt6577-sysirq": _gic_spi(
        "mediatek,mtk-sysirq.yaml; drivers/irqchip/irq-mtk-sysirq.c "
        "mtk_sysirq_domain_translate (the polarity is inverted towards the GIC)"),
    "nvidia,tegra30-ictlr": _gic_spi(
        "nvidia,tegra20-ictlr.yaml; drivers/irqchip/irq-tegra.c tegra_ictlr_domain_translate"),
    "nvidia,tegra210-ictlr": _gic_spi(
        "nvidia,tegra20-ictlr.yaml; drivers/irqchip/irq-tegra.c tegra_ictlr_domain_translate"),
    "fsl,imx8mq-gpc": _gic_spi(
        "fsl,imx-gpcv2.yaml; drivers/irqchip/irq-imx-gpcv2.c imx_gpcv2_domain_translate"),
    "fsl,imx7d-gpc": _gic_spi(
        "fsl,imx-gpcv2.yaml; drivers/irqchip/irq-imx-gpcv2.c imx_gpcv2_domain_translate"),
    # Broadcom BCM2835/6/7 (Raspberry Pi)
    "brcm,bcm2835-armctrl-ic": Binding(
        "cells", (2,), "brcm,bcm2835-armctrl-ic.yaml; drivers/irqchip/irq-bcm2835.c "
        "armctrl_xlate (IRQ_TYPE_NONE) and handle_level_irq on ARMCTRL-level, which has no "
        "irq_set_type", names=("bank", "irq"), line="level", untyped=True),
    "brcm,bcm2836-armctrl-ic": Binding(
        "cells", (2,), "brcm,bcm2835-armctrl-ic.yaml; drivers/irqchip/irq-bcm2835.c "
        "armctrl_xlate (IRQ_TYPE_NONE) and handle_level_irq on ARMCTRL-level, which has no "
        "irq_set_type", names=("bank", "irq"), line="level", untyped=True),
    "brcm,bcm2836-l1-intc": Binding(
        "cells", (2,), "brcm,bcm2836-l1-intc.yaml; drivers/irqchip/irq-bcm2836.c "
        "irq_domain_xlate_onetwocell, handle_percpu_devid_irq (timers, PMU, the GPU "
        "interrupt: per-CPU)", names=("local",), flags_cell=1, per_cpu=True),
    "brcm,l2-intc": Binding(
        "cells", (1,), "brcm,l2-intc.yaml; drivers/irqchip/irq-brcmstb-l2.c "
        "brcmstb_l2_edge_intc_of_init (irq_domain_xlate_onecell, handle_edge_irq)",
        line="edge"),
    "brcm,bcm7271-l2-intc": Binding(
        "cells", (1,), "brcm,l2-intc.yaml; drivers/irqchip/irq-brcmstb-l2.c "
        "brcmstb_l2_lvl_intc_of_init (irq_domain_xlate_onecell, handle_level_irq)",
        line="level"),
    "brcm,bcm2835-gpio": _twocell(_GPIOLIB + " (drivers/pinctrl/bcm/pinctrl-bcm2835.c)",
                                  ("gpio",)),
    "brcm,bcm2711-gpio": _twocell(_GPIOLIB + " (drivers/pinctrl/bcm/pinctrl-bcm2835.c)",
                                  ("gpio",)),
    # Qualcomm
    "qcom,pdc": _twocell("qcom,pdc.yaml; drivers/irqchip/qcom-pdc.c "
                         "(irq_domain_translate_twocell)", ("pin",)),
    "qcom,ipcc": Binding("cells", (3,), "qcom,ipcc.yaml; drivers/mailbox/qcom-ipcc.c "
                         "qcom_ipcc_domain_xlate", names=("client", "signal"), flags_cell=2),
    # TI K3
    "ti,sci-intr": Binding("cells", (1,), "ti,sci-intr.yaml; drivers/irqchip/irq-ti-sci-intr.c "
                           "ti_sci_intr_irq_domain_translate (the type is the router's "
                           "ti,intr-trigger-type)", names=("input",),
                           type_property="ti,intr-trigger-type"),
    # Marvell CP110 (new binding: <icu-irq type>)
    "marvell,cp110-icu-nsr": _twocell("marvell,cp110-icu.yaml; drivers/irqchip/irq-mvebu-icu.c "
                                      "mvebu_icu_translate"),
    # GPIO controllers with the gpiolib irqchip
    "arm,pl061": _twocell(_GPIOLIB + " (drivers/gpio/gpio-pl061.c)", ("gpio",)),
    "xlnx,zynqmp-gpio-1.0": _twocell(_GPIOLIB + " (drivers/gpio/gpio-zynq.c)", ("gpio",)),
    "snps,dw-apb-gpio-port": _twocell(_GPIOLIB + " (drivers/gpio/gpio-dwapb.c)", ("gpio",)),
    **{c: _twocell(_GPIOLIB + " (drivers/gpio/gpio-pca953x.c)", ("gpio",)) for c in (
        "nxp,pca9538", "nxp,pca9539", "nxp,pca9554", "nxp,pca9555", "nxp,pcal6408",
        "nxp,pcal6416", "nxp,pcal6524", "nxp,pcal9555a", "onnn,pca9654", "ti,tca6408",
        "ti,tca6416", "ti,tca6424")},
}

#: parent compatible -> binding, for controllers that are compatible-less child nodes
SUBNODE_BINDINGS: dict[str, Binding] = {
    "qcom,smp2p": _twocell("qcom,smp2p.yaml; drivers/soc/qcom/smp2p.c smp2p_irq_ops "
                           "(irq_domain_xlate_twocell)", ("bit",)),
    "hisilicon,mbigen-v2": _twocell("hisilicon,mbigen-v2.yaml; drivers/irqchip/irq-mbigen.c "
                                    "mbigen_domain_translate", ("pin",)),
}

#: Interrupt controllers found in Debian's arm64 DTBs whose binding is not modelled:
#: their specifiers are reported as unknown, never guessed. Compatible-less
#: controllers are listed by their parent's compatible.
UNMODELLED = frozenset({
    # Allwinner
    "allwinner,sun9i-a80-nmi", "allwinner,sun50i-a100-pinctrl", "allwinner,sun50i-a100-r-pinctrl",
    "allwinner,sun50i-a64-pinctrl", "allwinner,sun50i-a64-r-pinctrl", "allwinner,sun50i-h5-pinctrl",
    "allwinner,sun50i-h6-pinctrl", "allwinner,sun50i-h6-r-pinctrl", "allwinner,sun50i-h616-pinctrl",
    "allwinner,sun8i-h3-r-pinctrl",
    # Amlogic, AMS, APM
    "amlogic,meson-gpio-intc", "ams,as3722", "apm,xgene-gpio-sb",
    # Broadcom, CZ.NIC, Freescale/NXP
    "cznic,moxtet", "fsl,imx-intmux", "fsl,imx35-gpio",
    "fsl,imx-irqsteer", "fsl,imx8mm-gpc", "fsl,imx8mp-gpc", "fsl,imx8ulp-gpio",
    "fsl,qoriq-gpio", "fsl,ls1043a-extirq", "fsl,ls1088a-extirq", "fsl,qe-ic",
    # Gateworks, HiSilicon, Kontron
    "gw,gsc", "hisilicon,hi6421-spmi", "hisilicon,hi6421v530-pmic", "hisilicon,hi655x-pmic",
    "kontron,sl28cpld-gpio", "kontron,sl28cpld-intc",
    # Marvell
    "marvell,ap806-sei", "marvell,armada-8k-gpio", "marvell,armada-8k-pic",
    "marvell,cp110-icu-sei", "marvell,mv88e6085", "marvell,mv88e6190", "marvell,orion-gpio",
    "marvell,armada3710-nb-pinctrl", "marvell,armada3710-sb-pinctrl",
    "marvell,armada-3700-pcie", "maxim,max77620",
    # MediaTek
    "mediatek,mt2712-pinctrl", "mediatek,mt6331", "mediatek,mt6357", "mediatek,mt6358",
    "mediatek,mt6359", "mediatek,mt6360", "mediatek,mt6397", "mediatek,mt6779-pinctrl",
    "mediatek,mt6795-pinctrl", "mediatek,mt7531", "mediatek,mt7622-pinctrl",
    "mediatek,mt7981-pinctrl", "mediatek,mt7986a-pinctrl", "mediatek,mt7986b-pinctrl",
    "mediatek,mt8167-pinctrl", "mediatek,mt8173-pinctrl", "mediatek,mt8183-pinctrl",
    "mediatek,mt8186-pinctrl", "mediatek,mt8188-pinctrl", "mediatek,mt8192-pinctrl",
    "mediatek,mt8195-pinctrl", "mediatek,mt8365-pinctrl", "mediatek,mt8516-pinctrl",
    "mediatek,mt2712-pcie", "mediatek,mt7622-pcie", "mediatek,mt7986-pcie",
    "mediatek,mt8192-pcie", "mediatek,mt8195-pcie",
    # NVIDIA
    "nvidia,tegra30-gpio", "nvidia,tegra210-pmc",
    # Qualcomm
    "qcom,ipq5018-tlmm", "qcom,ipq5332-tlmm", "qcom,ipq6018-pinctrl", "qcom,ipq8074-pinctrl",
    "qcom,ipq9574-tlmm", "qcom,mdss", "qcom,mpm", "qcom,msm8916-pinctrl",
    "qcom,msm8953-pinctrl", "qcom,msm8976-pinctrl", "qcom,msm8992-pinctrl",
    "qcom,msm8994-pinctrl", "qcom,msm8996-pinctrl", "qcom,msm8998-mdss",
    "qcom,msm8998-pinctrl", "qcom,spmi-gpio", "qcom,spmi-mpp", "qcom,pm8008",
    "qcom,sm8150-lmh", "qcom,sc8180x-lmh", "qcom,sdm845-lmh", "qcom,qcm2290-mdss",
    "qcom,qcm2290-tlmm", "qcom,qcs404-pinctrl", "qcom,qdu1000-tlmm", "qcom,sa8775p-tlmm",
    "qcom,sc7180-mdss", "qcom,sc7180-pinctrl", "qcom,sc7280-mdss", "qcom,sc7280-pinctrl",
    "qcom,sc8180x-mdss", "qcom,sc8180x-tlmm", "qcom,sc8280xp-mdss", "qcom,sc8280xp-tlmm",
    "qcom,sdm630-pinctrl", "qcom,sdm660-pinctrl", "qcom,sdm670-mdss", "qcom,sdm670-tlmm",
    "qcom,sdm845-mdss", "qcom,sdm845-pinctrl", "qcom,sdx75-tlmm", "qcom,sm4450-tlmm",
    "qcom,sm6115-mdss", "qcom,sm6115-tlmm", "qcom,sm6125-mdss", "qcom,sm6125-tlmm",
    "qcom,sm6350-mdss", "qcom,sm6350-tlmm", "qcom,sm6375-tlmm", "qcom,sm8150-mdss",
    "qcom,sm8150-pinctrl", "qcom,sm8250-mdss", "qcom,sm8250-pinctrl", "qcom,sm8350-mdss",
    "qcom,sm8350-tlmm", "qcom,sm8450-mdss", "qcom,sm8450-tlmm", "qcom,sm8550-mdss",
    "qcom,sm8550-tlmm", "qcom,sm8650-mdss", "qcom,sm8650-tlmm", "qcom,spmi-pmic-arb",
    "qcom,x1e80100-mdss", "qcom,x1e80100-tlmm", "qcom,smsm",
    "qcom,x1e80100-spmi-pmic-arb",
    # Renesas, Rockchip, Samsung, Google
    "nxp,pcf8574",
    "renesas,rcar-gen3-gpio", "renesas,irqc", "renesas,rzg2l-irqc",
    "renesas,r9a07g043-pinctrl", "renesas,r9a07g044-pinctrl", "renesas,r9a08g045-pinctrl",
    "renesas,r9a09g057-pinctrl", "rockchip,gpio-bank", "rockchip,rk3399-pcie",
    "rockchip,rk3568-pcie", "rockchip,rk3588-pcie",
    "samsung,exynos5433-pinctrl", "samsung,exynos7-pinctrl", "samsung,exynos7885-pinctrl",
    "samsung,exynos850-pinctrl", "samsung,exynosautov9-pinctrl",
    "samsung,exynosautov920-pinctrl", "google,gs101-pinctrl",
    # SLIMbus devices, TI, Wolfson, X-Powers, Xilinx
    "slim217,1a0", "slim217,250", "ti,keystone-gpio", "ti,am64-gpmc", "ti,icssg-intc",
    "ti,sci-inta", "ti,tps65219", "ti,j7200-pcie-host", "wlf,wm5110",
    "x-powers,axp806", "x-powers,axp313a", "x-powers,axp717", "x-powers,axp803",
    "xlnx,nwl-pcie-2.11",
})

UNKNOWN = Binding("unknown", (), "not modelled: the specifier is not decoded")


def binding_for(compatible: list[str] | tuple[str, ...],
                parent_compatible: list[str] | tuple[str, ...] = ()) -> Binding:
    """The binding of a controller with these compatibles (or, compatible-less, its parent's).

    Returns :data:`UNKNOWN` (with ``key`` set to the compatible it was listed
    under, or "" when not listed at all) when the binding is not modelled.
    """
    if compatible:
        for compat in compatible:
            found = BINDINGS.get(compat)
            if found is not None:
                return _keyed(found, compat)
        for compat in compatible:
            if compat in UNMODELLED:
                return _keyed(UNKNOWN, compat)
        return UNKNOWN
    for compat in parent_compatible:
        found = SUBNODE_BINDINGS.get(compat)
        if found is not None:
            return _keyed(found, compat)
    for compat in parent_compatible:
        if compat in UNMODELLED:
            return _keyed(UNKNOWN, compat)
    return UNKNOWN


_KEYED: dict[tuple[int, str], Binding] = {}


def _keyed(binding: Binding, key: str) -> Binding:
    cached = _KEYED.get((id(binding), key))
    if cached is None:
        cached = _KEYED[(id(binding), key)] = binding._replace(key=key)
    return cached
