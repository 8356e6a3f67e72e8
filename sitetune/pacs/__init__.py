"""PACS integration: STOW-RS intake, series assembly and routing, analyses, deliveries."""
