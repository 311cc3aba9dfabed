//! Block colours of our own making (no game assets): a table of common blocks, then rules by name
//! pattern (`*_leaves`, `<dye>_wool`, ...). Anything else draws in [`UNKNOWN`] and is counted.

/// Magenta: a block this palette does not know. Loud on purpose.
pub const UNKNOWN: [u8; 3] = [255, 0, 255];
/// Water's base colour.
pub const WATER: [u8; 3] = [52, 95, 218];

/// How the renderer treats a block seen from above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Seen through: air, light, barriers.
    Clear,
    /// Drawn with depth shading; blocks under it are looked for to measure the depth.
    Water,
    /// The column's top.
    Solid([u8; 3]),
    /// Not in the palette: drawn in [`UNKNOWN`] and counted.
    Unknown,
}

const CLEAR: &[&str] = &[
    "air",
    "cave_air",
    "void_air",
    "light",
    "barrier",
    "structure_void",
    "glass_pane",
    "tripwire",
];

/// Blocks that live under water and read as water from above.
const WATERY: &[&str] = &[
    "water",
    "bubble_column",
    "kelp",
    "kelp_plant",
    "seagrass",
    "tall_seagrass",
];

const TABLE: &[(&str, [u8; 3])] = &[
    ("grass_block", [110, 158, 62]),
    ("dirt", [134, 96, 67]),
    ("coarse_dirt", [119, 85, 59]),
    ("rooted_dirt", [144, 103, 76]),
    ("podzol", [91, 63, 24]),
    ("mycelium", [111, 99, 105]),
    ("dirt_path", [148, 122, 65]),
    ("farmland", [115, 78, 46]),
    ("mud", [60, 57, 60]),
    ("clay", [160, 166, 179]),
    ("stone", [125, 125, 125]),
    ("cobblestone", [122, 122, 122]),
    ("mossy_cobblestone", [110, 118, 94]),
    ("deepslate", [80, 80, 82]),
    ("cobbled_deepslate", [77, 77, 80]),
    ("bedrock", [85, 85, 85]),
    ("granite", [149, 103, 85]),
    ("diorite", [188, 188, 188]),
    ("andesite", [136, 136, 136]),
    ("tuff", [108, 109, 102]),
    ("calcite", [223, 224, 220]),
    ("gravel", [131, 127, 126]),
    ("sand", [219, 207, 163]),
    ("red_sand", [190, 102, 33]),
    ("sandstone", [216, 203, 155]),
    ("red_sandstone", [186, 99, 29]),
    ("snow", [249, 254, 254]),
    ("snow_block", [249, 254, 254]),
    ("powder_snow", [248, 253, 253]),
    ("ice", [145, 183, 253]),
    ("packed_ice", [141, 180, 250]),
    ("blue_ice", [116, 167, 253]),
    ("lava", [207, 92, 20]),
    ("magma_block", [142, 63, 31]),
    ("obsidian", [15, 10, 24]),
    ("netherrack", [97, 38, 38]),
    ("soul_sand", [81, 62, 50]),
    ("end_stone", [219, 222, 158]),
    ("terracotta", [152, 94, 67]),
    ("moss_block", [89, 109, 45]),
    ("moss_carpet", [89, 109, 45]),
    ("pumpkin", [198, 118, 24]),
    ("melon", [111, 145, 30]),
    ("hay_block", [166, 136, 38]),
    ("cactus", [85, 127, 43]),
    ("sugar_cane", [148, 192, 101]),
    ("bamboo", [93, 144, 19]),
    ("lily_pad", [32, 128, 48]),
    ("short_grass", [104, 150, 58]),
    ("grass", [104, 150, 58]),
    ("tall_grass", [104, 150, 58]),
    ("fern", [96, 140, 52]),
    ("large_fern", [96, 140, 52]),
    ("dead_bush", [107, 79, 40]),
    ("dandelion", [245, 224, 56]),
    ("poppy", [200, 30, 30]),
    ("cornflower", [70, 105, 220]),
    ("oxeye_daisy", [230, 230, 220]),
    ("azure_bluet", [220, 225, 235]),
    ("vine", [70, 110, 30]),
    ("torch", [255, 216, 104]),
    ("glass", [200, 220, 225]),
    ("bricks", [150, 97, 83]),
    ("stone_bricks", [122, 121, 122]),
    ("bookshelf", [117, 94, 59]),
    ("crafting_table", [119, 88, 52]),
    ("chest", [152, 106, 44]),
    ("furnace", [110, 110, 110]),
    ("iron_block", [220, 220, 220]),
    ("gold_block", [246, 208, 61]),
    ("diamond_block", [98, 237, 228]),
    ("coal_ore", [105, 105, 105]),
    ("iron_ore", [136, 129, 122]),
    ("copper_ore", [124, 125, 120]),
    ("rail", [125, 110, 90]),
];

const DYES: &[(&str, [u8; 3])] = &[
    ("white", [233, 236, 236]),
    ("orange", [240, 118, 19]),
    ("magenta", [189, 68, 179]),
    ("light_blue", [58, 175, 217]),
    ("yellow", [248, 197, 39]),
    ("lime", [112, 185, 25]),
    ("pink", [237, 141, 172]),
    ("gray", [62, 68, 71]),
    ("light_gray", [142, 142, 134]),
    ("cyan", [21, 137, 145]),
    ("purple", [121, 42, 172]),
    ("blue", [53, 57, 157]),
    ("brown", [114, 71, 40]),
    ("green", [84, 109, 27]),
    ("red", [160, 39, 34]),
    ("black", [20, 21, 25]),
];

const WOODS: &[(&str, [u8; 3], [u8; 3])] = &[
    // (wood, bark/log, planks)
    ("oak", [109, 85, 50], [162, 130, 78]),
    ("spruce", [58, 37, 16], [114, 84, 48]),
    ("birch", [216, 215, 210], [192, 175, 121]),
    ("jungle", [85, 67, 25], [160, 115, 80]),
    ("acacia", [103, 96, 86], [168, 90, 50]),
    ("dark_oak", [60, 46, 26], [66, 43, 20]),
    ("mangrove", [84, 66, 41], [117, 54, 48]),
    ("cherry", [54, 33, 44], [226, 178, 172]),
    ("crimson", [92, 25, 29], [101, 48, 70]),
    ("warped", [58, 58, 77], [43, 104, 99]),
];

const LEAVES: [u8; 3] = [60, 120, 40];

/// Classify a block by its id (`minecraft:stone`). Blocks of other namespaces are unknown.
pub fn classify(id: &str) -> Class {
    let Some(name) = id.strip_prefix("minecraft:") else {
        return Class::Unknown;
    };
    if CLEAR.contains(&name) {
        return Class::Clear;
    }
    if WATERY.contains(&name) {
        return Class::Water;
    }
    if let Some((_, c)) = TABLE.iter().find(|(n, _)| *n == name) {
        return Class::Solid(*c);
    }
    if name.ends_with("_leaves") {
        return Class::Solid(match name {
            "cherry_leaves" => [230, 170, 200],
            "azalea_leaves" | "flowering_azalea_leaves" => [90, 120, 45],
            "birch_leaves" => [110, 150, 70],
            "spruce_leaves" => [50, 90, 50],
            _ => LEAVES,
        });
    }
    if let Some(c) = wood(name) {
        return Class::Solid(c);
    }
    if let Some(c) = dyed(name) {
        return Class::Solid(c);
    }
    if let Some(base) = name
        .strip_suffix("_slab")
        .or_else(|| name.strip_suffix("_stairs"))
        .or_else(|| name.strip_suffix("_wall"))
    {
        // Slabs, stairs and walls look like their block (stone_brick_slab -> stone_bricks).
        for candidate in [
            base.to_owned(),
            format!("{base}s"),
            format!("{base}_planks"),
        ] {
            if let Class::Solid(c) = classify(&format!("minecraft:{candidate}")) {
                return Class::Solid(c);
            }
        }
    }
    if name.ends_with("_ore") {
        return Class::Solid([125, 125, 125]);
    }
    Class::Unknown
}

fn wood(name: &str) -> Option<[u8; 3]> {
    let name = name.strip_prefix("stripped_").unwrap_or(name);
    for (w, bark, planks) in WOODS {
        let Some(rest) = name.strip_prefix(w).and_then(|r| r.strip_prefix('_')) else {
            continue;
        };
        return match rest {
            "log" | "wood" | "stem" | "hyphae" => Some(*bark),
            "planks" | "fence" | "fence_gate" | "door" | "trapdoor" | "pressure_plate" | "sign"
            | "button" => Some(*planks),
            _ => None,
        };
    }
    None
}

fn dyed(name: &str) -> Option<[u8; 3]> {
    // Longest dye names first, so light_blue_wool is not read as blue.
    let mut dyes: Vec<&(&str, [u8; 3])> = DYES.iter().collect();
    dyes.sort_by_key(|(d, _)| std::cmp::Reverse(d.len()));
    for (dye, c) in dyes {
        let Some(rest) = name.strip_prefix(dye).and_then(|r| r.strip_prefix('_')) else {
            continue;
        };
        return match rest {
            "wool" | "carpet" | "concrete" | "concrete_powder" | "stained_glass" | "bed"
            | "shulker_box" => Some(*c),
            "terracotta" | "glazed_terracotta" => Some(c.map(|v| (u16::from(v) * 3 / 4) as u8)),
            _ => None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(classify("minecraft:air"), Class::Clear);
        assert_eq!(classify("minecraft:water"), Class::Water);
        assert_eq!(classify("minecraft:seagrass"), Class::Water);
        assert_eq!(classify("minecraft:stone"), Class::Solid([125, 125, 125]));
        assert_eq!(classify("minecraft:oak_leaves"), Class::Solid(LEAVES));
        assert_eq!(classify("minecraft:oak_log"), Class::Solid([109, 85, 50]));
        assert_eq!(
            classify("minecraft:stripped_birch_log"),
            Class::Solid([216, 215, 210])
        );
        assert_eq!(
            classify("minecraft:light_blue_wool"),
            Class::Solid([58, 175, 217])
        );
        assert_eq!(classify("minecraft:blue_wool"), Class::Solid([53, 57, 157]));
        assert_eq!(
            classify("minecraft:stone_brick_slab"),
            Class::Solid([122, 121, 122])
        );
        assert_eq!(classify("minecraft:oak_slab"), Class::Solid([162, 130, 78]));
        assert_eq!(
            classify("minecraft:emerald_ore"),
            Class::Solid([125, 125, 125])
        );
        assert_eq!(classify("minecraft:made_up_block"), Class::Unknown);
        assert_eq!(classify("somemod:stone"), Class::Unknown);
        assert_eq!(classify("stone"), Class::Unknown);
    }
}
