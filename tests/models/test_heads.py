import torch

from medmodal.models.heads import ClassificationHead, LocalizationHead, soft_argmax_2d

from .helpers import assert_all_params_get_grad


def test_classification_head_linear_and_mlp():
    assert ClassificationHead(8, 3)(torch.randn(4, 8)).shape == (4, 3)
    head = ClassificationHead(8, 3, hidden_dim=16)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.modules()) == 2
    assert head(torch.randn(4, 8)).shape == (4, 3)


def test_boxes_are_valid_normalised_xyxy():
    head = LocalizationHead(grid_dim=6, context_dim=5, num_labels=3, hidden_dim=8).train()
    grid, context = torch.randn(4, 6, 5, 7) * 30, torch.randn(4, 5) * 30  # extreme inputs too
    boxes, heatmaps = head(grid, context)
    assert boxes.shape == (4, 3, 4) and heatmaps.shape == (4, 3, 5, 7)
    assert torch.isfinite(boxes).all()
    assert ((boxes >= 0) & (boxes <= 1)).all()
    assert (boxes[..., 0] <= boxes[..., 2]).all() and (boxes[..., 1] <= boxes[..., 3]).all()


def test_gradient_reaches_grid_context_and_every_parameter():
    head = LocalizationHead(grid_dim=6, context_dim=5, num_labels=3, hidden_dim=8)
    grid, context = torch.randn(2, 6, 4, 4, requires_grad=True), torch.randn(2, 5, requires_grad=True)
    boxes, heatmaps = head(grid, context)
    ((boxes * torch.randn_like(boxes)).sum() + heatmaps.square().mean()).backward()
    assert_all_params_get_grad(head)
    assert grid.grad.abs().sum() > 0 and context.grad.abs().sum() > 0


def test_soft_argmax_finds_a_constructed_peak():
    height, width = 4, 6
    for row, col in [(0, 0), (1, 3), (3, 5)]:
        heatmap = torch.zeros(1, 1, height, width)
        heatmap[0, 0, row, col] = 40.0
        x, y = soft_argmax_2d(heatmap)[0, 0]
        assert abs(x - (col + 0.5) / width) < 1e-4 and abs(y - (row + 0.5) / height) < 1e-4
    # A flat heatmap gives the image centre; two equal peaks their midpoint.
    assert torch.allclose(soft_argmax_2d(torch.zeros(1, 1, height, width)), torch.tensor([[[0.5, 0.5]]]))
    two = torch.zeros(1, 1, height, width)
    two[0, 0, 1, 0] = two[0, 0, 1, 4] = 40.0
    assert torch.allclose(
        soft_argmax_2d(two), torch.tensor([[[(0.5 + 4.5) / 2 / width, 1.5 / height]]]), atol=1e-4
    )


def test_box_centre_moves_to_where_the_grid_lights_up():
    """With the heatmap wired to grid channel 0, the box centre follows a spike in that channel."""
    head = LocalizationHead(grid_dim=2, context_dim=3, num_labels=2, hidden_dim=4).eval()
    with torch.no_grad():
        head.grid_proj.weight.zero_()
        head.grid_proj.bias.zero_()
        head.grid_proj.weight[0, 0] = 1.0  # hidden channel 0 = grid channel 0
        head.heatmap.weight.zero_()
        head.heatmap.bias.zero_()
        head.heatmap.weight[:, 0] = 30.0  # every class looks at hidden channel 0
    for row, col in [(0, 1), (2, 4), (4, 0)]:
        grid = torch.zeros(1, 2, 5, 5)
        grid[0, 0, row, col] = 1.0
        boxes, _ = head(grid, torch.randn(1, 3))
        centre_x = (boxes[0, :, 0] + boxes[0, :, 2]) / 2
        centre_y = (boxes[0, :, 1] + boxes[0, :, 3]) / 2
        # The box may be clipped at the border, so compare cells rather than exact centres.
        assert ((centre_x * 5).floor() == col).all() and ((centre_y * 5).floor() == row).all()
