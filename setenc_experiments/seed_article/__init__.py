"""The seed article's experiments on real catalogues, in one call: `reproduce(...)` writes the report.

1. single images (`single`): shoes, nearest neighbours, precision@3, t-SNE;
2. ordered multi-image (`ordered`): view-with-view similarities against the unordered matchers;
3. generic multi-image (`generic`): the worked recursive-vs-linear example, held-out retrieval of every method;
4. titles (`fusion`): image, text and fused scores.
"""

from setenc_experiments.seed_article.common import chance_precision, precision_at_k
from setenc_experiments.seed_article.generic import WORKED_MATRIX, worked_example
from setenc_experiments.seed_article.report import markdown, reproduce

__all__ = ["WORKED_MATRIX", "chance_precision", "markdown", "precision_at_k", "reproduce", "worked_example"]
