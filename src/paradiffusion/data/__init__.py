"""Stage DataModules and image-text sources."""
from paradiffusion.data.collate import ParagraphCollator
from paradiffusion.data.sources import ManifestDataset, ParaShapesFolder, WebDatasetSource, to_tensor
from paradiffusion.data.stages import (
    ImageTextDataModule,
    Stage1PretrainData,
    Stage2AlignmentData,
    Stage3QualityData,
)

__all__ = [
    "ImageTextDataModule",
    "ManifestDataset",
    "ParaShapesFolder",
    "ParagraphCollator",
    "Stage1PretrainData",
    "Stage2AlignmentData",
    "Stage3QualityData",
    "WebDatasetSource",
    "to_tensor",
]
