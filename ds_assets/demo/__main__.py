from ds_assets.notices import quiet_notices

quiet_notices()  # before the definitions import Dagster's preview APIs and MLflow

from ds_assets.demo.run import main  # noqa: E402

raise SystemExit(main())
