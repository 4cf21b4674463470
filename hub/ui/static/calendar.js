"use strict";

Hub.whoAmI();
