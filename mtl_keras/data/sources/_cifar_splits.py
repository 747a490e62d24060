"""Class splits of the two CIFAR-100 few-shot benchmarks, as data.

Names are those of the CIFAR-100 python archive's ``meta`` file
(``coarse_label_names`` / ``fine_label_names``, both sorted alphabetically there).

Sources:

* FC100 (Oreshkin et al. 2018, "TADAM", supplementary material): superclass
  indices ``train {1,2,3,4,5,6,9,10,15,17,18,19}``, ``val {8,11,13,16}``,
  ``test {0,7,12,14}`` as in TADAM's ``create_dataset_cifar100.py``
  (``class_split``, github.com/ElementAI/TADAM); the names agree with torchmeta's
  ``torchmeta/datasets/assets/cifar100/fc100/{train,val,test}.json``
  (github.com/tristandeleu/pytorch-meta).
* CIFAR-FS (Bertinetto et al. 2019, "R2D2"): the 64/16/20 fine classes of the
  R2D2 split files ``splits/bertinetto/{train,val,test}.txt``, taken from
  torchmeta's copy ``torchmeta/datasets/assets/cifar100/cifar-fs/{train,val,test}.json``
  (which lists ``[superclass, class]`` pairs); sorted here.
"""

from __future__ import annotations

#: CIFAR-100 ``coarse_label_names`` in archive order (index = coarse label).
CIFAR100_COARSE_LABEL_NAMES: tuple[str, ...] = (
    "aquatic_mammals",  # 0
    "fish",  # 1
    "flowers",  # 2
    "food_containers",  # 3
    "fruit_and_vegetables",  # 4
    "household_electrical_devices",  # 5
    "household_furniture",  # 6
    "insects",  # 7
    "large_carnivores",  # 8
    "large_man-made_outdoor_things",  # 9
    "large_natural_outdoor_scenes",  # 10
    "large_omnivores_and_herbivores",  # 11
    "medium_mammals",  # 12
    "non-insect_invertebrates",  # 13
    "people",  # 14
    "reptiles",  # 15
    "small_mammals",  # 16
    "trees",  # 17
    "vehicles_1",  # 18
    "vehicles_2",  # 19
)

#: FC100 superclass indices per split (TADAM's ``class_split``).
FC100_SUPERCLASS_INDICES: dict[str, tuple[int, ...]] = {
    "train": (1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19),
    "val": (8, 11, 13, 16),
    "test": (0, 7, 12, 14),
}

#: FC100 superclass names per split: 12/4/4 superclasses, 60/20/20 classes.
FC100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "train": (
        "fish",
        "flowers",
        "food_containers",
        "fruit_and_vegetables",
        "household_electrical_devices",
        "household_furniture",
        "large_man-made_outdoor_things",
        "large_natural_outdoor_scenes",
        "reptiles",
        "trees",
        "vehicles_1",
        "vehicles_2",
    ),
    "val": (
        "large_carnivores",
        "large_omnivores_and_herbivores",
        "non-insect_invertebrates",
        "small_mammals",
    ),
    "test": (
        "aquatic_mammals",
        "insects",
        "medium_mammals",
        "people",
    ),
}

#: CIFAR-FS fine class names per split (Bertinetto et al. 2019): 64/16/20 classes.
CIFAR_FS_CLASSES: dict[str, tuple[str, ...]] = {
    "train": (
        "apple", "aquarium_fish", "bear", "bee", "bottle", "bowl", "boy", "bridge",
        "bus", "can", "castle", "caterpillar", "chair", "clock", "cloud", "cockroach",
        "couch", "cup", "dinosaur", "dolphin", "elephant", "forest", "girl", "hamster",
        "house", "kangaroo", "keyboard", "lawn_mower", "lion", "lizard", "lobster",
        "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "palm_tree",
        "pear", "pine_tree", "plate", "porcupine", "possum", "rabbit", "raccoon", "ray",
        "road", "seal", "shrew", "skunk", "skyscraper", "snake", "spider", "squirrel",
        "streetcar", "sunflower", "tank", "tiger", "train", "trout", "tulip", "turtle",
        "willow_tree", "wolf",
    ),
    "val": (
        "beaver", "beetle", "butterfly", "camel", "cattle", "crab", "crocodile",
        "flatfish", "lamp", "maple_tree", "motorcycle", "otter", "sea", "shark",
        "television", "tractor",
    ),
    "test": (
        "baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck",
        "plain", "poppy", "rocket", "rose", "snail", "sweet_pepper", "table",
        "telephone", "wardrobe", "whale", "woman", "worm",
    ),
}  # fmt: skip
